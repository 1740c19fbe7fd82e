"""CPU: the authors'-style training loop against the engine, vgg-small on 5,000 CIFAR-10 images.

Baseline and engine are measured interleaved in the same run (the CPU may be shared), each
repetition: data-only epoch (baseline, engine), then a training epoch (baseline, engine).
Run: .venv/bin/python -m benchmarks.bench_cpu [--cifar ../shared/data/cifar10] [--reps 1]
     .venv/bin/python -m benchmarks.bench_cpu --synthetic 10 --steps 1   # the CPU twin CI runs
With --out DIR it also writes DIR/bench_cpu.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from benchmarks.common import (
    REPO,
    baseline_data_epoch,
    baseline_loader,
    baseline_model,
    baseline_train_epoch,
    cifar_subset,
    engine_config,
    engine_data_epoch,
    median,
    synthetic,
    timed,
    write_dataset,
)
from lrdecay.training.data import DeviceData
from lrdecay.training.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cifar", type=Path, default=REPO.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed epoch (default: the whole epoch, 40)")
    parser.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic", type=int, default=None, metavar="PER_CLASS",
                        help="random CIFAR-shaped images, PER_CLASS per class, instead of --cifar")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    if args.synthetic:
        arrays = synthetic(10 * args.synthetic, 10 * max(1, args.synthetic // 5))
    else:
        arrays = cifar_subset(args.cifar, per_class=500, test_per_class=100)
    n_train = len(arrays[0])
    path = write_dataset(Path("/tmp/lrdecay-bench-cpu.pt"), *arrays)
    config = engine_config("vgg_small", 125, True, 0.5, "mse", 0.9, 1e-4, 2500, "running",
                           channels_last=True, batched_subpaths="sequential")
    trainer = Trainer(config, DeviceData(path, device, True, True), device)
    loader = baseline_loader(arrays[0], arrays[1], 125, args.workers)
    steps = args.steps or len(loader)
    base_model, base_opt = baseline_model("vgg_small", 0.5, device, 0.9, 1e-4)
    model = trainer.build_model()
    opt = trainer.build_optimizer(model, 0.01)
    gen = torch.Generator().manual_seed(0)
    fraction = steps / len(loader)

    def engine_epoch() -> None:  # the engine's epoch loop, stopped after `steps` batches
        keep = trainer.data.train_y
        trainer.data.train_y = keep[: steps * 125]
        try:
            trainer.train_epoch(model, opt, gen)
        finally:
            trainer.data.train_y = keep

    results: dict[str, list[float]] = {k: [] for k in ("bd", "ed", "bt", "et")}
    for rep in range(args.reps):
        results["bd"].append(timed(lambda: baseline_data_epoch(loader, device), device))
        results["ed"].append(timed(lambda: engine_data_epoch(trainer, gen), device))
        results["bt"].append(timed(lambda: baseline_train_epoch(
            base_model, base_opt, loader, device, "mse", steps), device) / fraction)
        results["et"].append(timed(engine_epoch, device) / fraction)
        print(f"rep {rep}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()),
              flush=True)
    bd, ed, bt, et = (median(results[k]) for k in ("bd", "ed", "bt", "et"))
    cpu = platform.processor() or platform.machine()
    print(f"\n# CPU benchmark, {datetime.date.today()}, {cpu}, {os.cpu_count()} CPUs visible, "
          f"torch {torch.__version__}, {args.threads} threads")
    source = f"synthetic ({args.synthetic}/class)" if args.synthetic else "CIFAR-10"
    print(f"vgg-small, {n_train:,} {source} images, batch 125, crop+flip, momentum 0.9, wd 1e-4")
    print(f"timed training steps per epoch: {steps} of {len(loader)} (epoch time scaled to "
          f"{len(loader)})")
    print("| | baseline (DataLoader, torchvision, .item() per step) | engine | ratio |")
    print("|---|---|---|---|")
    print(f"| data time per epoch (s) | {bd:.2f} | {ed:.3f} | {bd / ed:.1f}x |")
    print(f"| whole epoch (s) | {bt:.1f} | {et:.1f} | {bt / et:.2f}x |")
    print(f"| images/s (training) | {n_train / bt:.0f} | {n_train / et:.0f} | |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_cpu.json").write_text(json.dumps({
            "date": str(datetime.date.today()), "cpu": cpu, "torch": torch.__version__,
            "threads": args.threads, "images": n_train, "source": source,
            "steps_timed": steps, "steps_per_epoch": len(loader),
            "data_epoch_s": {"baseline": bd, "engine": ed, "ratio": bd / ed},
            "whole_epoch_s": {"baseline": bt, "engine": et, "ratio": bt / et},
            "repetitions": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
