"""Learning rate per optimizer step: the main path's linear warm-up and a subpath's cooldown.

A subpath decays from the main lr to the subpath lr either at once (shape `step`, the paper's)
or over `schedule.decay.epochs` epochs after its branch point along a shape (linear, cosine,
sqrt = 1 - sqrt(x), square = 1 - x^2, the WSD cooldowns), then stays at the subpath lr. The lr is
a pure function of the step's position in its path, so a resumed run recomputes exactly the lr
it would have used, and tests compare each value with its closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# x in (0, 1]: the fraction of the cooldown done after this step -> the fraction of the
# (main lr - subpath lr) gap still left. Each is 1 at x = 0 and 0 at x = 1.
SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: 0.5 * (1.0 + math.cos(math.pi * x)),
    "sqrt": lambda x: 1.0 - math.sqrt(x),
    "square": lambda x: 1.0 - x * x,
}
COOLDOWN_SHAPES = ("step", *SHAPES)  # the schema's enum of schedule.decay.shape (a test checks)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last minibatch may be smaller)."""
    return -(-n_train // batch_size)


def cooldown_lr(step: int, total_steps: int, main_lr: float, subpath_lr: float,
                shape: str) -> float:
    """The lr of a subpath's update number `step` (0: the first after the branch point) in a
    cooldown of `total_steps` updates: x = (step + 1) / total_steps, so the cooldown's last
    update is the first at exactly the subpath lr; `step` is the subpath lr from the start."""
    if shape == "step" or step + 1 >= total_steps:
        return subpath_lr
    return subpath_lr + (main_lr - subpath_lr) * SHAPES[shape]((step + 1) / total_steps)


def warmup_lr(step: int, total_steps: int, main_lr: float) -> float:
    """The lr of the main path's update number `step` (0: its first) in a linear warm-up of
    `total_steps` updates: main_lr * (step + 1) / total_steps, then main_lr."""
    if step + 1 >= total_steps:
        return main_lr
    return main_lr * (step + 1) / total_steps


def epoch_lrs(config: dict, branch_epoch: int | None, epoch: int,
              n_steps: int) -> list[float] | None:
    """The lr of each of the `n_steps` updates of one epoch of a path, or None where the whole
    epoch is at the path's constant lr (then the engines run exactly as without a schedule).

    `epoch` is the epoch's index counted from where the schedule starts (0: the first epoch):
    for the main path (`branch_epoch` None) from epoch 0, for a subpath from its branch point.
    """
    sched, opt = config["schedule"], config["optimizer"]
    if branch_epoch is None:
        warmup = sched["warmup_epochs"]
        if epoch >= warmup:
            return None
        total = warmup * n_steps
        return [warmup_lr(epoch * n_steps + s, total, opt["main_lr"]) for s in range(n_steps)]
    decay = sched["decay"]
    if decay["shape"] == "step" or epoch >= decay["epochs"]:
        return None
    total = decay["epochs"] * n_steps
    return [cooldown_lr(epoch * n_steps + s, total, opt["main_lr"], opt["subpath_lr"],
                        decay["shape"]) for s in range(n_steps)]
