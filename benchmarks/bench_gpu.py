"""GPU: baseline vs engine, K subpaths at once vs one at a time, VGG-11, whole-study projection.

Self-contained (synthetic uint8 CIFAR-shaped data: throughput does not depend on pixel values),
one command, under 5 minutes on an H100:
    python -m benchmarks.bench_gpu            # writes $OUT/bench_gpu.json if $OUT is set
    python -m benchmarks.bench_gpu --smoke --device cpu   # tiny sizes: checks the script runs
Every figure is absolute plus a ratio to a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import torch

from benchmarks.common import (
    VGG11_TRAIN_GFLOP,
    baseline_data_epoch,
    baseline_loader,
    baseline_model,
    baseline_train_epoch,
    engine_config,
    engine_data_epoch,
    synthetic,
    timed,
    write_dataset,
)
from benchmarks.project import project, study_shape
from lrdecay.core import io
from lrdecay.training.data import DeviceData
from lrdecay.training.engine import Trainer, configure_backend
from lrdecay.training.stacked import StackedStepper

# Dense peak TFLOP/s of the tensor cores at TF32 (the engine's default precision on CUDA).
PEAK_TF32 = {"H100": 494.7, "H200": 494.7, "A100": 156.0, "L40S": 183.0, "L4": 60.0}
AUTHORS = dict(model="vgg_small", batch_size=125, augment=True, dropout=0.5, loss="mse",
               momentum=0.9, weight_decay=1e-4, eval_batch=2500, train_metric="running")
PAPER = dict(model="vgg11", batch_size=128, augment=False, dropout=0.0, loss="cross_entropy",
             momentum=0.0, weight_decay=0.0, eval_batch=2000, train_metric="full_pass")


def make_trainer(setting: dict, arrays, device: torch.device, tmp: Path, **engine) -> Trainer:
    config = engine_config(**setting, **engine)
    configure_backend(config["engine"], device, None)
    path = write_dataset(tmp / f"bench-{len(arrays[0])}.pt", *arrays)
    return Trainer(config, DeviceData(path, device, True, setting["augment"]), device)


def stacked_run(trainer: Trainer, k: int) -> tuple[StackedStepper, list[torch.Generator]]:
    """K fresh models stacked in the engine's K-at-once stepper, with their generators."""
    stepper = StackedStepper(trainer, 0.01)
    models = []
    for i in range(k):
        torch.manual_seed(i)
        models.append(trainer.build_model())
    stepper.params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
                      for n, _ in stepper.base.named_parameters()}
    if trainer.config["optimizer"]["momentum"]:
        stepper.buffers = {n: torch.zeros_like(v) for n, v in stepper.params.items()}
    stepper.origin = stepper.flat()  # where each path starts (its distance travelled is logged)
    gens = [torch.Generator(device=trainer.device).manual_seed(i) for i in range(k)]
    return stepper, gens


def batched_epoch_s(trainer: Trainer, k: int, with_eval: bool, reps: int = 1) -> float:
    stepper, gens = stacked_run(trainer, k)

    def epoch() -> None:
        running = stepper.train_epoch(gens)
        if with_eval:
            stepper.evaluate(running)

    epoch()  # warm-up of every shape timed below (cuDNN autotuning, allocator), eval included
    return min(timed(epoch, trainer.device) for _ in range(reps))


def one_model(trainer: Trainer) -> tuple[torch.nn.Module, torch.optim.Optimizer,
                                          torch.Generator]:
    """A fresh model with its optimiser and generator: the main path's engine (K = 1)."""
    model = trainer.build_model()
    return (model, trainer.build_optimizer(model, 0.01),
            torch.Generator(device=trainer.device).manual_seed(0))


def sequential_epoch_s(trainer: Trainer, with_eval: bool, reps: int = 1) -> float:
    model, opt, gen = one_model(trainer)

    def epoch() -> None:
        running = trainer.train_epoch(model, opt, gen)
        if with_eval:
            trainer.epoch_values(model, running)

    epoch()  # warm-up of every shape timed below, eval included
    return min(timed(epoch, trainer.device) for _ in range(reps))


class Report:
    """The results dict that becomes bench_gpu.json, and progress lines with the elapsed time."""

    def __init__(self, device_name: str, smoke: bool, path: Path) -> None:
        self.began = time.monotonic()
        self.path = path
        self.out: dict = {"device": device_name, "date": str(datetime.date.today()),
                          "torch": torch.__version__, "smoke": smoke, "complete": False}

    def log(self, line: str) -> None:
        """Print a progress line and rewrite the JSON with everything measured so far, so a run
        cut at its time limit still leaves its numbers."""
        print(f"[{time.monotonic() - self.began:.0f}s] {line}", flush=True)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(self.path, self.out)  # atomic: a cut run leaves the last whole file


def baseline_vs_engine(report: Report, trainer: Trainer, arrays, workers: int) -> None:
    """1. The authors' way (DataLoader + torchvision on CPU workers, .item() per step) vs the
    engine: one data pass and one training epoch each."""
    device, n = trainer.device, len(arrays[0])
    loader = baseline_loader(arrays[0], arrays[1], 125, workers)
    model, opt = baseline_model("vgg_small", 0.5, device, 0.9, 1e-4)
    baseline_train_epoch(model, opt, loader, device, "mse")  # warm-up
    gen = torch.Generator(device=device).manual_seed(0)
    engine_data_epoch(trainer, gen)
    b_data = timed(lambda: baseline_data_epoch(loader, device), device)
    e_data = timed(lambda: engine_data_epoch(trainer, gen), device)
    b_epoch = timed(lambda: baseline_train_epoch(model, opt, loader, device, "mse"), device)
    e_epoch = sequential_epoch_s(trainer, with_eval=False)
    report.out["baseline_vs_engine"] = {"data_s": [b_data, e_data], "epoch_s": [b_epoch, e_epoch]}
    report.log(f"vgg-small {n} images/epoch: data {b_data:.3f}s -> {e_data:.4f}s "
               f"({b_data / e_data:.1f}x), epoch {b_epoch:.3f}s -> {e_epoch:.3f}s "
               f"({b_epoch / e_epoch:.1f}x)")


def k_at_once(report: Report, trainer: Trainer, n: int, ks: list[int]) -> None:
    """2. K at once vs one at a time (images per second per model, training only)."""
    seq = sequential_epoch_s(trainer, with_eval=False, reps=2)
    report.out["k_at_once"] = {"one_at_a_time_img_s": n / seq}
    for k in ks:
        t = batched_epoch_s(trainer, k, with_eval=False, reps=2)
        rate_total = n * k / t  # model-images per second, K models trained together
        report.out["k_at_once"][str(k)] = {"epoch_s": t, "img_s_per_model": rate_total / k,
                                           "model_img_s": rate_total,
                                           "ratio_vs_one_at_a_time": rate_total / (n / seq)}
        report.log(f"K={k:3d}: {t:.3f}s per epoch of K models, {rate_total:,.0f} model-images/s"
                   f" = {rate_total / (n / seq):.1f}x one at a time ({n / seq:,.0f})")


def engine_settings(report: Report, arrays, device: torch.device, tmp: Path, k: int) -> None:
    """Engine settings at the largest K, to choose defaults by measurement (same data, same run
    as :func:`k_at_once`, whose K = `k` time is the reference)."""
    for label, engine in (("channels_last off", {"channels_last": False}),
                          ("bf16 autocast", {"bf16": True})):
        variant = make_trainer(AUTHORS, arrays, device, tmp, **engine)
        report.out["settings"][label] = variant.settings
        t = batched_epoch_s(variant, k, with_eval=False, reps=2)
        base_t = report.out["k_at_once"][str(k)]["epoch_s"]
        report.out["k_at_once"][f"{k} {label}"] = {"epoch_s": t, "speedup_vs_default": base_t / t}
        report.log(f"K={k} with {label}: {t:.3f}s per epoch ({base_t / t:.2f}x the default "
                   "settings)")
        del variant


def projection_times(trainer: Trainer, k: int) -> dict[str, float]:
    """3. What the whole-study projection needs: a main-path epoch and a subpath model-epoch at
    the preset's K, each with its per-epoch evaluation on the test set."""
    main_s = sequential_epoch_s(trainer, with_eval=True)
    sub_s = batched_epoch_s(trainer, k, with_eval=True) / k
    return {"main_epoch_s": main_s, "subpath_model_epoch_s": sub_s}


def vgg11_throughput(report: Report, trainer: Trainer, n: int, device_name: str) -> None:
    """4. VGG-11 training throughput of one model, against the device's TF32 peak."""
    t1 = sequential_epoch_s(trainer, with_eval=False)
    peak = next((v for k, v in PEAK_TF32.items() if k in device_name), None)
    flops = VGG11_TRAIN_GFLOP * 1e9 * n / t1
    report.out["vgg11"] = {"model_epoch_s": t1, "tflops": flops / 1e12,
                           "fraction_of_tf32_peak": flops / (peak * 1e12) if peak else None}
    report.log(f"VGG-11, {n} images: {t1:.3f}s per model-epoch, {flops / 1e12:.1f} TFLOP/s"
               + (f" = {flops / peak / 1e10:.0f}% of the TF32 peak ({peak} TFLOP/s)"
                  if peak else ""))


def project_studies(report: Report, inputs: dict[str, dict[str, float]]) -> None:
    """5. The whole study of each preset on this one device."""
    report.out["projection"] = {}
    for preset, times in inputs.items():
        result = project(study_shape(preset), **times)
        report.out["projection"][preset] = result
        report.log(f"{preset} study: {result['model_epochs']:,} model-epochs over "
                   f"{result['seeds']} seed(s) (with per-epoch evaluation): main "
                   f"{times['main_epoch_s']:.3f}s/epoch, subpaths "
                   f"{times['subpath_model_epoch_s']:.3f}s/model-epoch -> "
                   f"{result['per_seed_min']:.1f} min per seed, {result['total_min']:.1f} min "
                   f"in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    scale = 50 if args.smoke else 1
    n_small, n_full, n_test = 5000 // scale, 50000 // scale // 10, 10000 // scale
    ks = [1, 2, 4] if args.smoke else [1, 16, 81]  # 81: all of the authors' subpaths in one job
    tmp = Path("/tmp/lrdecay-bench-gpu")
    tmp.mkdir(parents=True, exist_ok=True)
    report = Report(name, args.smoke, args.out / "bench_gpu.json")

    # The authors' setting (vgg_small) on a 5,000-image subset: steps 1 to 3.
    arrays = synthetic(n_small, n_test)
    trainer = make_trainer(AUTHORS, arrays, device, tmp)
    report.out["settings"] = {"default": trainer.settings}  # numeric settings of each variant
    baseline_vs_engine(report, trainer, arrays, args.workers)
    k_at_once(report, trainer, n_small, ks)
    engine_settings(report, arrays, device, tmp, ks[-1])
    k_authors = 4 if args.smoke else study_shape("authors")["k"]
    inputs = {"authors": projection_times(trainer, k_authors)}
    report.out["authors_with_eval"] = {"k": k_authors, **inputs["authors"]}
    report.log(f"authors' setting with per-epoch evaluation: main path "
               f"{inputs['authors']['main_epoch_s'] * 1e3:.1f} ms/epoch (goal <= 30), K="
               f"{k_authors} subpaths {inputs['authors']['subpath_model_epoch_s'] * 1e3:.1f} ms "
               f"per model-epoch (goal <= 8 in TF32)")
    del trainer

    # The paper's setting (VGG-11) on full CIFAR-10 sized data (50,000 images): steps 3 and 4.
    arrays = synthetic(n_full * (1 if args.smoke else 10), n_test)
    trainer = make_trainer(PAPER, arrays, device, tmp)
    report.out["settings"]["vgg11"] = trainer.settings
    vgg11_throughput(report, trainer, len(arrays[0]), name)
    inputs["paper"] = projection_times(trainer, 2 if args.smoke else study_shape("paper")["k"])
    report.out["vgg11"]["batched_model_epoch_s_with_eval"] = inputs["paper"][
        "subpath_model_epoch_s"]
    report.out["projection_inputs"] = inputs

    project_studies(report, inputs)
    report.out["complete"] = True
    report.save()
    print(f"wrote {report.path} in {time.monotonic() - report.began:.0f}s")


if __name__ == "__main__":
    main()
