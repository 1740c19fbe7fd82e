"""Every path pattern of a seed's training files, spelled once (lrdecay.study.plan.Plan builds the
paths).

The rules' `output:` and `log:` patterns, their wildcard constraints, the validation's limits and
the job code that writes or reads a file inside a job folder all format the names below, so a
folder cannot be named one way by a rule and another by its job. tests/test_layout.py checks
that no other module of lrdecay/ or workflow/ spells one of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Numbered:
    """A file or folder name with one zero-padded number, e.g. `segment-0005`.

    `name(5)` is what a job writes; `name("{end}")` (the braced wildcard) the pattern of a rule's
    output; `constraint` its wildcard_constraints; `limit` how many numbers the width allows."""

    prefix: str
    wildcard: str
    width: int
    suffix: str = ""

    def name(self, number: int | str) -> str:
        """The name of `number`, or with the string "{<wildcard>}" a Snakemake pattern."""
        if isinstance(number, str):
            if number != f"{{{self.wildcard}}}":
                raise ValueError(f"{self.prefix}...: a pattern takes {{{self.wildcard}}}, "
                                 f"not {number!r}")
            return f"{self.prefix}{number}{self.suffix}"
        if not 0 <= number < self.limit:
            raise ValueError(f"{number} does not fit the {self.width} digits of "
                             f"{self.prefix}{'N' * self.width}{self.suffix}")
        return f"{self.prefix}{number:0{self.width}d}{self.suffix}"

    @property
    def pattern(self) -> str:
        """The name with the braced wildcard: `segment-{end}`."""
        return self.name(f"{{{self.wildcard}}}")

    @property
    def glob(self) -> str:
        """A glob matching every number's name: `branch-*.npy`."""
        return f"{self.prefix}*{self.suffix}"

    @property
    def constraint(self) -> str:
        """The wildcard's regular expression: exactly `width` digits."""
        return rf"\d{{{self.width}}}"

    @property
    def limit(self) -> int:
        """One more than the largest number the width holds (10 ** width)."""
        return 10**self.width


# Below a seed's folder (<run>/seed-<s>/): one folder per training job, one file per shard.
MAIN_DIR, SUBPATHS_DIR = "main", "subpaths"
SEGMENT = Numbered(f"{MAIN_DIR}/segment-", "end", 4)  # rule main_segment's output (end epoch)
GROUP = Numbered(f"{SUBPATHS_DIR}/group-", "group", 3)  # rule subpath_group's (group index)
SHARD = Numbered("landscape/shard-", "shard", 3, ".csv")  # rule landscape_shard's output
# A training job's log (<seed>/logs/) and resume folder (<seed>/.resume/), named like its rule.
SEGMENT_JOB = Numbered("main_segment-", "end", 4)
GROUP_JOB = Numbered("subpath_group-", "group", 3)
SHARD_JOB = Numbered("landscape_shard-", "shard", 3)
RESUME = ".resume"  # partial training state; never a Snakemake output
RESUME_STATE = "resume.pt"  # a run's whole state in its resume folder (lrdecay.training.train)

# Inside a training job's folder (and each path's resume folder, which a job's folder links to).
METRICS = "metrics.csv"  # one row per path and epoch; written last, it marks a path done
SNAPSHOTS = "snapshots.npy"  # flattened parameters at the trajectory's epochs
STATE = "state.pt"  # a segment's full state at its end epoch (the next segment starts there)
WEIGHTS = "weights.pt"  # a path's final weights at full precision
# The subpath branching at an epoch: its name (metrics' path column), its resume folder, the
# main-path state it starts from (in a segment folder, where the epoch is not the segment's end)
# and, in its group's folder, its snapshots and final weights.
BRANCH = Numbered("branch-", "branch", 4)
BRANCH_STATE = Numbered("branch-", "branch", 4, ".pt")
BRANCH_SNAPSHOTS = Numbered("branch-", "branch", 4, ".npy")
BRANCH_WEIGHTS = Numbered("branch-", "branch", 4, ".weights.pt")
