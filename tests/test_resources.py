"""Each job's mem_mb and runtime follow from the config and hold what the job really uses.

The per-job check on a whole (tiny) run is in tests/test_workflow.py (every job logs its peak
memory); here the size-dependent part is measured where it dominates: PCA of a few hundred
snapshots of a 60 k-parameter model, exact and incremental, in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrdecay import config as lrconfig
from lrdecay import io, resources

from .conftest import REPO, TINY

PRESETS = {name: REPO / "config" / f"{name}.yaml" for name in ("tiny", "authors", "paper")}


def costs(*files: Path, gpu: bool = False, **sections: object) -> resources.JobCosts:
    return resources.JobCosts(lrconfig.load(REPO / "config.yaml", *files, overrides=sections),
                              gpu=gpu)


def test_model_size_matches_the_built_model() -> None:
    import torch  # noqa: F401 (lrdecay.models needs it)

    from lrdecay import data, models
    for name in ("tiny", "paper", "authors"):
        config = lrconfig.load(REPO / "config.yaml", PRESETS[name])
        shape = data.DATASETS[config["data"]["name"]].input_shape
        shape = (64,) if config["model"]["name"] == "mlp" else shape
        model = models.build(config["model"], shape, 10)
        assert resources.n_params(config) == sum(p.numel() for p in model.parameters()), name


def test_requests_follow_the_config_and_grow_on_retry() -> None:
    quick, paper = costs(), costs(PRESETS["paper"], gpu=True)
    # a paper-preset PCA chunk alone is 256 x 9.2 M float64 = 18.9 GB (the old fixed 8 GB)
    assert paper.mem_mb("pca") > 256 * resources.n_params(paper.config) * 8 / 2**20
    assert quick.mem_mb("pca") < 4000
    bigger = costs(pca={"chunk_rows": 512, "method": "incremental"})
    smaller = costs(pca={"chunk_rows": 64, "method": "incremental"})
    assert bigger.mem_mb("pca") > smaller.mem_mb("pca")
    longer = costs(schedule={"segment_epochs": 100})
    assert longer.runtime("main_segment") > quick.runtime("main_segment")
    assert paper.mem_mb("main_segment") > resources.BASE_MB + resources.CUDA_MB  # CUDA context
    assert paper.mem_mb("pca") == costs(PRESETS["paper"], gpu=False).mem_mb("pca")  # CPU job
    for rule in ("prepare_data", "main_segment", "subpath_group", "pca", "landscape_shard"):
        assert paper.mem_mb(rule, 2) == 2 * paper.mem_mb(rule)
        assert paper.runtime(rule, 2) == 2 * paper.runtime(rule)
    assert paper.runtime("subpath_group") > paper.runtime("main_segment")


# Peak from VmHWM (lrdecay.logs): ru_maxrss of a child keeps the forking pytest's peak.
MEASURE = """
import json, sys
from pathlib import Path
from lrdecay import logs, pca
files = [Path(p) for p in sys.argv[2:]]
out = Path(sys.argv[1])
pca.run(files, json.loads(out.joinpath("pca.json").read_text()), out / "v.csv", out / "c.csv",
        out / "b.npy", "test")
print(logs.peak_memory_mb())
"""


@pytest.mark.parametrize("method", ["exact", "incremental"])
def test_pca_request_holds_the_measured_peak(tmp_path: Path, method: str) -> None:
    """Trajectories shaped as the config says (661 snapshots of 60 010 parameters); the PCA job's
    peak RSS must be below its mem_mb, and mem_mb not more than 2.5 times the peak."""
    pca_config = {"method": method, "chunk_rows": 128, "n_components": 5}
    job = costs(TINY, model={"name": "mlp", "hidden": [800]},
                schedule={"main_epochs": 150, "first_branch_epoch": 10, "branch_interval": 10,
                          "last_branch_epoch": 100, "subpath_epochs": 50, "segment_epochs": 50,
                          "subpaths_per_job": 5}, pca=pca_config)
    p = resources.n_params(job.config)
    rng = np.random.default_rng(0)
    files = []
    for branch, rows in [(None, 151), *[(b, 51) for b in range(10, 101, 10)]]:
        path = tmp_path / f"traj-{branch}.npy"
        io.save_array(path, rng.standard_normal((rows, p), dtype=np.float32),
                      {"epochs": list(range(rows)), "branch_epoch": branch})
        files.append(str(path))
    (tmp_path / "pca.json").write_text(json.dumps(pca_config))
    result = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), *files],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    peak = float(result.stdout.split()[-1])
    requested = job.mem_mb("pca")
    assert peak < requested < 2.5 * peak, f"{method}: peak {peak:.0f} MB, mem_mb {requested}"
