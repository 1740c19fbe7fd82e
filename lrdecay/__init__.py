"""lrdecay: a reproducible pipeline for 'Understanding the Generalization Benefits of Late Learning
Rate Decay' (Ren, Ma, Ying, AISTATS 2024)."""

__version__ = "0.1.0"
