import copy

import pytest
import yaml

import lrdecay.config.validate as C


@pytest.fixture
def toy_defaults() -> dict:
    """The toy section with every schema default filled in."""
    schema = yaml.safe_load(C.TOY_SCHEMA_PATH.read_text())
    return copy.deepcopy({k: v["default"] for k, v in schema["properties"].items()})


@pytest.fixture
def small_toy(toy_defaults) -> dict:
    """A small instance (d = 16, n = 6, C >= 0 on M) on which the whole table passes in seconds;
    the mutation tests run its theory-vs-simulation rows once per planted bug."""
    toy = dict(toy_defaults)
    toy.update(d=16, n=6, eta_large=0.005, lemma_timescales=1.0, lemma_records=40,
               minnorm_starts=1, mixing_replicas=40, permutations=40, phase2_timescales=3,
               phase3_relaxations=3, decay_points=3, record_points=60)
    return toy
