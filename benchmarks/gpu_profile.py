"""Where a training step's time goes: torch.profiler over a few steps of the authors' setting.

For one model (K = 1, the main path's engine) and K models at once (the subpaths' engine), it
records per training step: the wall time, the device's busy time (the sum of the kernels' own
times; on a CPU the ATen ops' self time), the number of kernels (ops) launched, and the top
kernels by time. Launch-bound steps show as busy time far below the wall time.
    python -m benchmarks.gpu_profile --out $OUT                  # K = 1 and 81 on CUDA
    python -m benchmarks.gpu_profile --device cpu --smoke --out /tmp/p   # the CPU twin (CI)
Writes gpu_profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_gpu import AUTHORS, make_trainer, one_model, stacked_run
from benchmarks.common import sync, synthetic

TOP = 8


def profiled_steps(fn, device: torch.device, steps: int) -> dict:
    """Profile `fn` (one epoch of `steps` training steps) after a warm-up call."""
    fn()  # warm-up: cuDNN autotuning, allocator, lazy initialisation
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    began = time.perf_counter()
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - began
    events = prof.key_averages()
    if device.type == "cuda":
        # Kernels: events with device time and no CPU-side children (the launched kernels).
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total for e in kernels)
        counted = [(e.key, e.count, e.self_device_time_total) for e in kernels]
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        busy_us = sum(e.self_cpu_time_total for e in kernels)
        counted = [(e.key, e.count, e.self_cpu_time_total) for e in kernels]
    counted.sort(key=lambda row: row[2], reverse=True)
    launches = sum(count for _, count, _ in counted)
    return {"steps": steps, "wall_ms_per_step": wall / steps * 1e3,
            "busy_ms_per_step": busy_us / steps / 1e3,
            "busy_fraction": busy_us / 1e6 / wall if wall else None,
            "kernels_per_step": launches / steps,
            "top": [{"name": name[:120], "calls_per_step": count / steps,
                     "ms_per_step": us / steps / 1e3} for name, count, us in counted[:TOP]]}


def epoch_of(trainer, k: int):
    """One training epoch of K fresh models: the main path's engine for K = 1, else the
    subpaths' K-at-once engine."""
    if k == 1:
        model, opt, gen = one_model(trainer)
        return lambda: trainer.train_epoch(model, opt, gen)
    stepper, gens = stacked_run(trainer, k)
    return lambda: stepper.train_epoch(gens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script")
    parser.add_argument("--steps", type=int, default=None, help="training steps profiled")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (1 if args.smoke else 10)
    ks = [1, 2] if args.smoke else [1, 81]
    batch = AUTHORS["batch_size"]
    tmp = Path("/tmp/lrdecay-gpu-profile")
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = synthetic(steps * batch, batch)
    trainer = make_trainer(AUTHORS, arrays, device, tmp)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu", "torch": torch.__version__, "smoke": args.smoke,
                    "batch_size": batch, "by_k": {}}
    for k in ks:
        row = profiled_steps(epoch_of(trainer, k), device, steps)
        result["by_k"][str(k)] = row
        print(f"K={k}: {row['wall_ms_per_step']:.2f} ms/step wall, {row['busy_ms_per_step']:.2f}"
              f" ms/step busy ({row['busy_fraction']:.0%}), {row['kernels_per_step']:.0f} "
              f"kernels/step; top: " + ", ".join(
                  f"{t['name']} {t['ms_per_step']:.2f} ms" for t in row["top"][:3]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'gpu_profile.json'}")


if __name__ == "__main__":
    main()
