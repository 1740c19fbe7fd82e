"""What a DVC user reads after a build: a headline metrics row a terminal holds, plots with axis
titles (learning curves a line per path), `dvc_plots/` ignored, one committed pipeline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from lrdecay.analysis import summary
from lrdecay.tooling import dvcgen

REPO = Path(__file__).resolve().parent.parent


def test_headline_is_a_few_short_numbers() -> None:
    """The DVC metrics file holds 7 flat numbers, keys short enough that DVC's one row (path,
    then a column per key) fits about 130 columns; the best decay epoch is the argmin."""
    full = {"decay_timing": {"decay_at_0010": {"subpath_final_test_loss": 0.5,
                                               "decay_gain_vs_main_same_epoch": -0.1},
                             "decay_at_0020": {"subpath_final_test_loss": 0.3,
                                               "decay_gain_vs_main_same_epoch": 0.5},
                             "decay_at_0030": {"subpath_final_test_loss": None}},
            "pca": {"pc1_pc2_variance_ratio": 0.9},
            "claims": {"a": {"verdict": 1}, "b": {"verdict": -1}, "c": {"verdict": 0},
                       "d": {"verdict": 1}},
            "toy_checks": {"passed": 5, "failed": 1}}
    head = summary.headline(full)
    assert head == {"best_decay_epoch": 20, "best_test_loss": 0.3, "decay_gain": 0.2,
                    "pc1_pc2": 0.9, "supported": 2, "contradicted": 1, "toy_failed": 1}
    assert len(head) <= 8 and all(not isinstance(v, dict) for v in head.values())
    width = len("results/quick/headline.json") + sum(len(k) + 4 for k in head)  # DVC: 4 apart
    assert width <= 135, width  # measured: 130 for results/tiny (dvc metrics show)


def test_metrics_and_plots_in_the_pipeline() -> None:
    """dvc.yaml declares only headline.json as metrics; every table plot names both axes; each
    seed's learning curves use the per-path template, which exists and titles its axes."""
    content = yaml.safe_load((REPO / dvcgen.DVC_YAML).read_text())
    metrics = [m for s in content["stages"].values() for m in s.get("metrics", [])]
    assert metrics == ["results/quick/headline.json"]
    specs = [spec for plot in content["plots"] for spec in plot.values() if spec]
    assert specs and all(spec.get("x_label") and spec.get("y_label") for spec in specs)
    curves = [spec for spec in specs if spec.get("template") == dvcgen.CURVES_TEMPLATE]
    assert {next(iter(spec["y"].values())) for spec in curves} == {"test_loss", "train_loss"}
    template = json.loads((REPO / ".dvc" / "plots" / f"{dvcgen.CURVES_TEMPLATE}.json").read_text())
    encoding = template["encoding"]
    assert encoding["x"]["title"] == "<DVC_METRIC_X_LABEL>"
    assert encoding["y"]["title"] == "<DVC_METRIC_Y_LABEL>"
    assert {"field": "branch_epoch"} in encoding["detail"]  # a line per path


def test_dvc_plots_ignored_and_one_pipeline_committed() -> None:
    """`dvc plots show`'s output folder is git-ignored; plain `dvc status` collects every
    dvc.yaml, so only the quick preset's is committed."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=REPO)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert [f for f in tracked if Path(f).name == dvcgen.DVC_YAML] == [dvcgen.DVC_YAML]
