"""The PCA job's memory as a function of its chunk, and the largest chunk that fits a request.

One model shared by both sides of the request: lrdecay.config.resources prices the PCA job's request
with it where the Snakefile starts, and lrdecay.analysis.pca picks its chunk with it inside the job.
It imports nothing of lrdecay. Measured against real peaks in tests/test_resources.py.
"""

from __future__ import annotations

import math

MB = 2**20
# Multiplier over the sum of the known terms: allocator slack, temporary copies we do not model.
SLACK = 1.3
# PCA's scikit-learn and LAPACK workspace on top: the incremental fit of 661 x 60 010 snapshots
# peaked at 857 MB where its modelled blocks come to 585 MB.
PCA_BASE_MB = 400


def pca_block_rows(method: str, chunk_rows: int, rows: int, n_components: int) -> int:
    """Rows of the largest float64 block PCA holds: a chunk (exact: a chunk's worth of values),
    incremental: plus the components and mean correction it stacks, and a last short chunk
    merged into the one before (lrdecay.analysis.pca._row_blocks)."""
    if method == "exact":
        return min(chunk_rows, rows)
    return min(max(chunk_rows, n_components), rows) + n_components + 1


def pca_bytes(method: str, chunk_rows: int, rows: int, n_params: int, n_components: int,
              dtype_bytes: int) -> int:
    """Peak bytes of a PCA job beyond PCA_BASE_MB (measured: tests/test_resources.py)."""
    block, p = pca_block_rows(method, chunk_rows, rows, n_components), n_params
    if method == "exact":
        # lrdecay.analysis.pca._fit_exact: the Gram (or covariance) matrix with eigh's copy and
        # workspace; a block (chunk_rows snapshots' worth of values) read as float64 with
        # its per-file parts; the components and their QR. The mapped trajectory pages it
        # touched stay resident. Then the projection: seven chunk-sized float64 arrays.
        small = min(rows, p)
        fit = 3 * small * small * 8 + (3 * block + 3 * n_components) * p * 8
        return rows * p * dtype_bytes + max(fit, 7 * block * p * 8)
    # Measured about seven block-sized float64 arrays at once: the block read (as float64),
    # scikit-learn's validated copy, the stacked block, the SVD's copy and factors (and as many
    # while projecting: centred rows, in-plane part, residual).
    return 7 * block * p * 8


def pca_need_mb(method: str, chunk_rows: int, rows: int, n_params: int, n_components: int,
                dtype_bytes: int) -> int:
    """mem_mb (a multiple of 100) a PCA job with this chunk needs at its first attempt."""
    need = PCA_BASE_MB + SLACK * pca_bytes(method, chunk_rows, rows, n_params, n_components,
                                           dtype_bytes) / MB
    return int(math.ceil(need / 100) * 100)


def pca_min_chunk(method: str, n_components: int) -> int:
    """Smallest chunk PCA can work with: IncrementalPCA needs a batch of n_components rows."""
    return 2 if method == "exact" else n_components


def pca_chunk_rows(mem_mb: int | None, method: str, chunk_rows: int, rows: int, n_params: int,
                   n_components: int, dtype_bytes: int) -> int:
    """The configured chunk_rows, lowered until the PCA job's modelled peak fits in `mem_mb`
    (its request, at most the cap); never below pca_min_chunk, which the caller checks."""
    low = pca_min_chunk(method, n_components)
    if mem_mb is None or chunk_rows <= low:
        return max(chunk_rows, low) if method != "exact" else chunk_rows
    fits = lambda c: pca_need_mb(method, c, rows, n_params, n_components,  # noqa: E731
                                 dtype_bytes) <= mem_mb
    if fits(chunk_rows):
        return chunk_rows
    lo, hi = low, chunk_rows  # fits(lo) may be False: the caller refuses such a cap
    while hi - lo > 1:  # need grows with the chunk: the largest chunk that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
