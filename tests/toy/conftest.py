import copy

import pytest

import lrdecay.config as C


@pytest.fixture
def toy_defaults() -> dict:
    """The toy section with every schema default filled in."""
    toy: dict = {}
    C._fill_defaults(C._load_yaml(C.TOY_SCHEMA_PATH), toy)
    return copy.deepcopy(toy)


@pytest.fixture
def small_toy(toy_defaults) -> dict:
    """A small fast instance (d = 8, n = 3) for the check functions."""
    toy = dict(toy_defaults)
    toy.update(d=8, n=3, replicas=16, mixing_replicas=40, permutations=40, minnorm_starts=2,
               phase2_timescales=3, phase3_relaxations=3, decay_points=3, record_points=60,
               lemma_timescales=1.0, n1_timescales=4)
    return toy
