"""Each job's mem_mb and runtime follow from the config and hold what the job really uses.

The per-job check on a whole (tiny) run is in tests/test_workflow.py (every job logs its peak
memory); here the size-dependent part is measured where it dominates: PCA of a few hundred
snapshots of a 60 k-parameter model, exact and incremental, in a fresh process, and again under
a memory cap (the chunk it picks must keep the peak inside the capped request). The caps
(LRDECAY_MAX_MEM_MB, LRDECAY_MAX_RUNTIME) clip every request, retries included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrdecay.config import resources
from lrdecay.config import validate as lrconfig
from lrdecay.core import io

from .conftest import REPO, TINY

PRESETS = {name: REPO / "config" / f"{name}.yaml" for name in ("tiny", "authors", "paper")}


def costs(*files: Path, gpu: bool = False, caps: resources.Caps | None = None,
          **sections: object) -> resources.JobCosts:
    return resources.JobCosts(lrconfig.load(REPO / "config.yaml", *files, overrides=sections),
                              gpu=gpu, caps=caps or resources.Caps())


def test_model_size_matches_the_built_model() -> None:
    import torch  # noqa: F401 (lrdecay.training.models needs it)

    from lrdecay.training import data, models
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


# Peak from VmHWM (lrdecay.core.logs): ru_maxrss of a child keeps the forking pytest's peak.
# argv: folder, the job's mem_mb ("none": no request, as `lrdecay pca`), trajectory files.
MEASURE = """
import json, sys
from pathlib import Path
from lrdecay.analysis import pca
from lrdecay.core import logs
out, mem_mb, files = Path(sys.argv[1]), sys.argv[2], [Path(p) for p in sys.argv[3:]]
pca.run(files, json.loads(out.joinpath("pca.json").read_text()), out / "v.csv", out / "c.csv",
        out / "b.npy", "test", mem_mb=None if mem_mb == "none" else int(mem_mb))
print(logs.peak_memory_mb())
"""
MEASURED_SCHEDULE = {"main_epochs": 150, "first_branch_epoch": 10, "branch_interval": 10,
                     "last_branch_epoch": 100, "subpath_epochs": 50, "segment_epochs": 50,
                     "subpaths_per_job": 5}


def measure_pca(tmp_path: Path, job: resources.JobCosts, mem_mb: int | None) -> float:
    """Peak RSS (MB) of a PCA job over random trajectories shaped as `job`'s config says (661
    snapshots of 60 010 parameters), given `mem_mb` as its request."""
    p = resources.n_params(job.config)
    rng = np.random.default_rng(0)
    files = []
    for branch, rows in [(None, 151), *[(b, 51) for b in range(10, 101, 10)]]:
        path = tmp_path / f"traj-{branch}.npy"
        io.save_array(path, rng.standard_normal((rows, p), dtype=np.float32),
                      {"epochs": list(range(rows)), "branch_epoch": branch})
        files.append(str(path))
    (tmp_path / "pca.json").write_text(json.dumps(job.config["pca"]))
    result = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), str(mem_mb).lower(),
                             *files], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return float(result.stdout.split()[-1])


@pytest.mark.parametrize("method", ["exact", "incremental"])
def test_pca_request_holds_the_measured_peak(tmp_path: Path, method: str) -> None:
    """The PCA job's peak RSS must be below its mem_mb, and mem_mb not more than 2.5 times the
    peak."""
    pca_config = {"method": method, "chunk_rows": 128, "n_components": 5}
    job = costs(TINY, model={"name": "mlp", "hidden": [800]}, schedule=MEASURED_SCHEDULE,
                pca=pca_config)
    peak = measure_pca(tmp_path, job, None)
    requested = job.mem_mb("pca")
    assert peak < requested < 2.5 * peak, f"{method}: peak {peak:.0f} MB, mem_mb {requested}"


def test_capped_pca_picks_a_chunk_that_fits_the_cap(tmp_path: Path) -> None:
    """Under a memory cap well below its uncapped request, the incremental PCA job asks for at
    most the cap, lowers its chunk (the same one resources and the job derive) and its measured
    peak stays inside what it asked for."""
    pca_config = {"method": "incremental", "chunk_rows": 512, "n_components": 5}
    shape = {"model": {"name": "mlp", "hidden": [800]}, "schedule": MEASURED_SCHEDULE,
             "pca": pca_config}
    uncapped = costs(TINY, **shape).mem_mb("pca")  # 512-row blocks: about 2.3 GB
    cap = resources.PCA_BASE_MB + (uncapped - resources.PCA_BASE_MB) // 3
    job = costs(TINY, caps=resources.Caps(max_mem_mb=cap), **shape)
    requested, chunk = job.mem_mb("pca"), job.pca_chunk_rows()
    assert requested <= cap < uncapped
    assert 5 <= chunk < 512 // 2, chunk
    peak = measure_pca(tmp_path, job, requested)
    assert peak < requested, f"peak {peak:.0f} MB above the capped request {requested}"


PAPER_RULES = ("prepare_data", "main_segment", "subpath_group", "gather_training", "pca",
               "landscape_shard", "sharpness", "figure2", "toy_checks")


def test_caps_clip_every_request_and_its_retries() -> None:
    """The paper preset asks for 168 GB (PCA) and 60 h (subpath groups); under caps no request,
    at any attempt, exceeds them, a request below a cap is unchanged, and PCA's equals
    min(estimate, cap)."""
    uncapped = costs(PRESETS["paper"], gpu=True)
    caps = resources.Caps(max_mem_mb=64000, max_runtime=1440)
    capped = costs(PRESETS["paper"], gpu=True, caps=caps)
    assert uncapped.mem_mb("pca") > 64000 and uncapped.runtime("subpath_group") > 1440
    for rule in PAPER_RULES:
        for attempt in range(1, 6):
            mem, time = capped.mem_mb(rule, attempt), capped.runtime(rule, attempt)
            assert mem <= 64000 and time <= 1440, (rule, attempt, mem, time)
            assert mem == min(uncapped.mem_mb(rule, attempt), 64000), (rule, attempt)
            if rule != "pca":  # PCA's smaller chunk under the memory cap also takes less time
                assert time == min(uncapped.runtime(rule, attempt), 1440), (rule, attempt)
    assert capped.mem_mb("main_segment", 2) == 2 * capped.mem_mb("main_segment")  # still grows
    assert capped.mem_mb("pca") == 64000 == capped.mem_mb("pca", 3)
    assert capped.runtime("subpath_group", 2) == 1440


def test_time_capped_training_jobs_get_the_attempts_they_need() -> None:
    """A subpath group capped at 24 h of its 60 h gets enough resubmissions that the attempts,
    each losing start-up and one checkpoint interval, cover its estimated work, on top of the
    profile's retries; jobs under the cap keep the profile's retries (None)."""
    class Execution:  # Snakemake's execution settings, as the rule's retries: reads them
        retries = 1

    for cap in (240, 1440, 2880):
        job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_runtime=cap))
        need = job.runtime_estimate("subpath_group")
        extra = job.continuations("subpath_group")
        kept = cap - resources.OVERHEAD_MIN - job.checkpoint_minutes("subpath_group")
        assert (extra + 1) * kept >= need - resources.OVERHEAD_MIN > extra * kept, cap
        assert job.retries("subpath_group", Execution()) == 1 + extra
        assert job.retries("subpath_group", None) == extra  # a dry run has no settings
        assert job.retries("main_segment", Execution()) is None  # 30 minutes: not cut
    assert costs(PRESETS["paper"], gpu=True).retries("subpath_group", Execution()) is None


def test_invalid_caps_are_refused_with_the_fix() -> None:
    for env, words in [({"LRDECAY_MAX_RUNTIME": "1d"}, "whole number of minutes"),
                       ({"LRDECAY_MAX_MEM_MB": "64G"}, "whole number of MB"),
                       ({"LRDECAY_MAX_RUNTIME": "5"}, "below 11 minutes"),
                       ({"LRDECAY_MAX_MEM_MB": "0"}, "below 1000 MB")]:
        with pytest.raises(resources.CapsError, match=words):
            resources.Caps.from_env(env)
    assert resources.Caps.from_env({"LRDECAY_MAX_MEM_MB": " ", "LRDECAY_MAX_RUNTIME": ""}) == \
        resources.Caps()
    assert resources.Caps.from_env({"LRDECAY_MAX_RUNTIME": "2880"}).max_runtime == 2880
    # a capped training job that checkpoints too rarely would redo its work on every attempt
    job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_runtime=20))
    with pytest.raises(resources.CapsError,
                       match=r"engine\.checkpoint_seconds = 300.*at most \d+ or raise "
                             r"LRDECAY_MAX_RUNTIME to at least \d+"):
        resources.check_caps(job)
    resources.check_caps(costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_runtime=20),
                               engine={"checkpoint_seconds": 60}))
    # PCA whose smallest chunk does not fit the memory cap
    job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_mem_mb=5000))
    with pytest.raises(resources.CapsError, match="LRDECAY_MAX_MEM_MB = 5000: the PCA job needs"):
        resources.check_caps(job)


def test_pca_chunk_is_the_largest_that_fits_the_cap() -> None:
    """pca.chunk_rows where it fits; under a cap the largest chunk whose modelled need fits."""
    paper = costs(PRESETS["paper"], gpu=True)
    assert paper.pca_chunk_rows() == 256
    for cap in (20000, 64000, 128000):
        job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_mem_mb=cap))
        chunk = job.pca_chunk_rows()
        assert resources.pca_need_mb(*job._pca_args(chunk)) <= cap
        assert resources.pca_need_mb(*job._pca_args(chunk + 1)) > cap
        assert job.runtime("pca") < paper.runtime("pca")  # smaller thin SVDs
    job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(max_mem_mb=500000))
    assert job.pca_chunk_rows() == 256  # never above pca.chunk_rows


def test_slurm_dry_run_prints_capped_requests(tmp_path: Path) -> None:
    """`snakemake -n --profile profiles/slurm` on the paper preset with caps exported: every job's
    mem_mb and runtime within them, PCA at the cap; a too-small cap stops before any job."""
    env = {**os.environ, "LRDECAY_SLURM_ACCOUNT": "", "LRDECAY_SLURM_PARTITION": "cpuq",
           "LRDECAY_SLURM_GPU_PARTITION": "gpuq", "LRDECAY_MAX_MEM_MB": "64000",
           "LRDECAY_MAX_RUNTIME": "1440"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile",
               str(REPO / "profiles" / "slurm"), "-n", "--forceall", "--directory",
               str(tmp_path), "--configfile", str(PRESETS["paper"])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    requests = re.findall(r"(?ms)^rule (\w+):\n.*?^\s+resources: [^\n]*?mem_mb=(\d+)[^\n]*?"
                          r"runtime=(\d+)", result.stdout + result.stderr)
    assert {"pca", "subpath_group"} <= {rule for rule, _, _ in requests}
    for rule, mem, time in requests:
        assert int(mem) <= 64000 and int(time) <= 1440, (rule, mem, time)
    assert {int(mem) for rule, mem, _ in requests if rule == "pca"} == {64000}
    env["LRDECAY_MAX_RUNTIME"] = "15"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0 and "engine.checkpoint_seconds" in result.stdout + result.stderr


def test_describe_lists_the_capped_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lrdecay describe` shows the requests the Snakefile makes under the exported caps."""
    from lrdecay.tooling import cli

    monkeypatch.setenv("LRDECAY_MAX_MEM_MB", "64000")
    monkeypatch.setenv("LRDECAY_MAX_RUNTIME", "1440")
    config = lrconfig.load(REPO / "config.yaml", PRESETS["paper"])
    lines = {line.split()[0]: line for line in cli.request_lines(config)}
    job = costs(PRESETS["paper"], gpu=True, caps=resources.Caps(64000, 1440))
    assert "LRDECAY_MAX_MEM_MB=64000" in lines["requests"]
    assert re.search(rf"mem_mb\s+64000 ->\s+64000 .*chunk_rows {job.pca_chunk_rows()} of 256",
                     lines["pca"])
    assert re.search(r"runtime\s+1440 ->\s+1440 min .*capped from 3610 min: "
                     rf"{job.continuations('subpath_group')} resubmission", lines["subpath_group"])


def test_every_rule_takes_its_resources_from_its_own_stage() -> None:
    """Each rule of workflow/rules/ declares its resources once, from its own stage in
    lrdecay.config.resources.STAGES (mem_mb, runtime, gpu and the GPU partition all come from it),
    and every stage is a rule's: a rule that named another rule's stage would get that rule's
    requests, and a stage left over after a rule is renamed would price nothing."""
    declared = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for rule, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text()):
            declared[rule] = re.findall(r"\*\*stage_resources\(\"(\w+)\"\)", body)
            assert not re.search(r"^\s+(mem_mb|runtime|gpu)=", body, re.M), (
                f"{rule} sets a resource by hand beside its stage")
    assert declared and all(stage == [rule] for rule, stage in declared.items()), declared
    assert set(declared) == set(resources.STAGES)
    # the GPU stages: their jobs ask for a GPU, a CUDA context's memory and the GPU partition
    assert set(resources.GPU_RULES) == {"main_segment", "subpath_group", "landscape_shard",
                                        "sharpness"}
    assert set(resources.RESUMABLE_RULES) == {"main_segment", "subpath_group"}
    gpu, cpu = costs(gpu=True), costs(gpu=False)
    for rule, stage in resources.STAGES.items():
        assert gpu.mem_estimate(rule) - cpu.mem_estimate(rule) >= (
            resources.CUDA_MB if stage.gpu and rule != "subpath_group" else 0), rule
        if not stage.gpu:
            assert gpu.mem_estimate(rule) == cpu.mem_estimate(rule), rule
    with pytest.raises(KeyError, match="rule 'nope' declares no stage: add it to "
                                       "lrdecay.config.resources.STAGES"):
        cpu.mem_mb("nope")
    with pytest.raises(ValueError, match="'pca' does not resume"):
        cpu.checkpoint_minutes("pca")
