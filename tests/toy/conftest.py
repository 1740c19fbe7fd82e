import copy

import pytest
import yaml

import lrdecay.config as C


@pytest.fixture
def toy_defaults() -> dict:
    """The toy section with every schema default filled in."""
    schema = yaml.safe_load(C.TOY_SCHEMA_PATH.read_text())
    return copy.deepcopy({k: v["default"] for k, v in schema["properties"].items()})


@pytest.fixture
def small_toy(toy_defaults) -> dict:
    """A small fast instance (d = 8, n = 3) for the check functions."""
    toy = dict(toy_defaults)
    toy.update(d=8, n=3, replicas=16, mixing_replicas=40, permutations=40, minnorm_starts=2,
               phase2_timescales=3, phase3_relaxations=3, decay_points=3, record_points=60,
               lemma_timescales=1.0, n1_timescales=4)
    return toy


@pytest.fixture
def mutation_toy(toy_defaults) -> dict:
    """A small instance on which the whole table passes in a few seconds (mutation tests)."""
    toy = dict(toy_defaults)
    toy.update(d=16, n=6, mixing_replicas=40, permutations=40, minnorm_starts=2,
               phase2_timescales=3, phase3_relaxations=3, decay_points=3, record_points=60,
               lemma_timescales=1.0, n1_timescales=4, mixing_relaxations=3)
    return toy
