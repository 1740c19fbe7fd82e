"""Atomic, verified file I/O: nothing half-written is ever taken for a result.

Every checkpoint and array gets a JSON sidecar with its size and SHA-256, so a truncated or
corrupt file is reported with its path and the fix instead of a traceback from inside torch.
Resume states carry their record inside the same file (`save_state`), so one rename commits
state and record together and a kill at any instant leaves the previous or the new pair.
Files renamed into place get the mode the umask gives a new file, as if written directly.
torch is imported on use, not with the module: the Snakefile and the DVC stages' DAG check import
this module in every Snakemake start, where importing torch would cost seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from lrdecay import __version__


class CorruptFileError(RuntimeError):
    """A checkpoint or array on disk is missing, truncated or does not match its checksum."""


STATE_MAGIC = b"lrdecay-state 1\n"  # first line of a resume state; the record is the second

# Called with the final path right before and right after a temporary file is renamed onto it:
# tests use it to kill a job at those instants.
commit_hook: Callable[[str, Path], None] | None = None


def rerun_fix(path: str | Path) -> str:
    """How to regenerate a file that a job wrote inside its output folder.

    Snakemake reruns a job only when its output is missing, and a job's output is the whole
    folder, so deleting the file alone would change nothing: the folder must go.
    """
    folder = Path(path).parent
    return (f"delete the folder {folder} (the output of the job that wrote it) and rerun the "
            f"same command; Snakemake then reruns that job (or: snakemake --force {folder})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hook(moment: str, path: Path) -> None:
    if commit_hook is not None:
        commit_hook(moment, path)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file follows the umask
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        _hook("before", path)
        os.replace(tmp_path, path)
        _hook("after", path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path` that replaces `path` whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame as tidy CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _record(path: Path, extra: dict | None = None) -> None:
    meta = {"bytes": path.stat().st_size, "sha256": sha256(path), "lrdecay_version": __version__}
    meta.update(extra or {})
    write_json(_sidecar(path), meta)


def verify(path: str | Path, fix: str) -> dict:
    """Check `path` against its sidecar; return the sidecar, or raise naming path and fix."""
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.exists():
        raise CorruptFileError(f"{path} is missing. Fix: {fix}")
    if not sidecar.exists():
        raise CorruptFileError(f"{path} has no checksum record {sidecar.name}. Fix: {fix}")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{sidecar} is not valid JSON ({err}). Fix: {fix}") from err
    _check_record(meta, sidecar, fix)
    size = path.stat().st_size
    if size != meta["bytes"]:
        raise CorruptFileError(
            f"{path} is truncated or overwritten: {size} bytes, expected {meta['bytes']}. "
            f"Fix: {fix}"
        )
    if sha256(path) != meta["sha256"]:
        raise CorruptFileError(f"{path} does not match its SHA-256 in {sidecar.name}. Fix: {fix}")
    return meta


def _check_record(meta: object, where: Path, fix: str) -> None:
    """A checksum record is an object with an integer size and a 64-digit SHA-256."""
    if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int)
            and isinstance(meta.get("sha256"), str) and len(meta["sha256"]) == 64):
        raise CorruptFileError(
            f"{where} is not a checksum record (want a JSON object with 'bytes' and 'sha256', "
            f"found {json.dumps(meta)[:80]}). Fix: {fix}"
        )


def save_checkpoint(path: str | Path, state: dict, meta: dict | None = None) -> None:
    """torch.save `state` atomically with a size/checksum sidecar."""
    import torch  # on use (module docstring)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # A handle, not the path: torch names the archive's root folder after a path, so the
        # random temporary name would make identical states differ byte for byte.
        torch.save(state, handle)
    _record(path, meta)


def load_checkpoint(path: str | Path, fix: str, map_location: Any = "cpu") -> dict:
    """Verify then load a checkpoint with weights_only=True (no arbitrary code from pickles)."""
    import torch  # on use (module docstring)
    verify(path, fix)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for unreadable files
        raise CorruptFileError(f"{path} could not be read by torch ({err}). Fix: {fix}") from err


def save_state(path: str | Path, state: dict, meta: dict | None = None) -> None:
    """torch.save `state` with its size/checksum record in the same file, in one rename.

    Layout: STATE_MAGIC, one line of JSON (bytes, sha256 and `meta`), then torch.save's bytes.
    """
    import torch  # on use (module docstring)
    buffer = BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    record = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
              "lrdecay_version": __version__, **(meta or {})}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(STATE_MAGIC + json.dumps(record, sort_keys=True).encode() + b"\n")
        handle.write(payload)


def _read_state(path: Path, fix: str) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    head, _, rest = blob.partition(b"\n")
    line, _, payload = rest.partition(b"\n")
    if head + b"\n" != STATE_MAGIC:
        raise CorruptFileError(f"{path} is not an lrdecay resume state. Fix: {fix}")
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} has an unreadable record ({err}). Fix: {fix}") from err
    _check_record(record, path, fix)
    if len(payload) != record["bytes"]:
        raise CorruptFileError(f"{path} is truncated or overwritten: {len(payload)} bytes of "
                               f"state, expected {record['bytes']}. Fix: {fix}")
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise CorruptFileError(f"{path} does not match the SHA-256 in its record. Fix: {fix}")
    return record, payload


def state_record(path: str | Path, fix: str) -> dict:
    """The record of a resume state (verified against the state's bytes)."""
    return _read_state(Path(path), fix)[0]


def load_state(path: str | Path, fix: str, map_location: Any = "cpu") -> dict:
    """Verify and load a state written by `save_state` (weights_only=True)."""
    import torch  # on use (module docstring)
    _, payload = _read_state(Path(path), fix)
    try:
        return torch.load(BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for unreadable files
        raise CorruptFileError(f"{path} could not be read by torch ({err}). Fix: {fix}") from err


def save_array(path: str | Path, array: np.ndarray, meta: dict) -> None:
    """Save a .npy (memory-mappable) with a JSON sidecar describing its layout."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    _record(path, {"shape": list(array.shape), "dtype": str(array.dtype), **meta})


def record_array(path: str | Path, meta: dict) -> None:
    """Write the sidecar of a .npy filled in place (e.g. through np.lib.format.open_memmap)."""
    array = np.load(path, mmap_mode="r")
    _record(Path(path), {"shape": list(array.shape), "dtype": str(array.dtype), **meta})


def load_array(path: str | Path, fix: str, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """Verify and open a .npy (memory-mapped by default) with its sidecar."""
    meta = verify(path, fix)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise CorruptFileError(f"{path} is not a valid .npy file ({err}). Fix: {fix}") from err
    return array, meta
