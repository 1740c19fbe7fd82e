"""Atomic, verified file I/O: nothing half-written is ever taken for a result.

Every checkpoint and array gets a JSON sidecar with its size and SHA-256, so a truncated or
corrupt file is reported with its path and the fix instead of a traceback from inside torch.
Resume states carry their record inside the same file (`save_state`), so one rename commits
state and record together and a kill at any instant leaves the previous or the new pair.
Files renamed into place get the mode the umask gives a new file, as if written directly.
No work file is written, filled in place, published or recorded through a symbolic link that
lrdecay did not make (it makes none): `guard` refuses one, naming it, wherever a work file is
opened for writing, so a link planted in a shared work folder cannot redirect a write onto a
file outside the run. A full disk is reported with the path that could not be written.
torch is imported on use, not with the module: the Snakefile and the DVC stages' DAG check import
this module in every Snakemake start, where importing torch would cost seconds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from lrdecay import __version__


class CorruptFileError(RuntimeError):
    """A checkpoint or array on disk is missing, truncated or does not match its checksum."""


class UnsafePathError(RuntimeError):
    """A work file would be reached through a symbolic link that lrdecay did not make."""


class WriteError(OSError):
    """A file could not be written (full disk, quota, read-only file system); names the path."""

    def __str__(self) -> str:
        return str(self.strerror)


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


def guard(path: str | Path, root: str | Path | None = None) -> Path:
    """`path`, after checking that neither it nor a folder between `root` and it is a symbolic
    link; else UnsafePathError naming the link and the fix.

    lrdecay never makes links inside a run folder, so one found there was planted (work folders
    on shared cluster file systems are often writable by others), and opening, filling or
    hard-linking through it would write onto, or publish, whatever it points at. `root` is the
    run folder (or another folder the caller owns whole); what lies above it (output_dir may
    itself be a link to scratch space) is the user's choice and not checked. Without `root`
    only `path` itself is checked. Parts that do not exist yet are fine: lrdecay makes them.
    """
    path = Path(path)
    chain = [path]
    if root is not None:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            parts = ()
        chain = [Path(root).joinpath(*parts[:i]) for i in range(1, len(parts) + 1)] or chain
    for part in chain:  # outermost first: a linked folder is named before what lies in it
        if part.is_symlink():
            try:
                target = os.readlink(part)
            except OSError:
                target = "?"
            raise UnsafePathError(
                f"{part} is a symbolic link (to {target}) that lrdecay did not make; it never "
                "writes or publishes a work file through one, since the link could point the "
                "write at any file outside the run. Fix: delete the link (rm "
                f"{part}) and rerun the same command (what belonged there is then made anew)."
            )
    return path


def find_links(root: str | Path, limit: int = 5) -> list[Path]:
    """Up to `limit` symbolic links inside the folder `root` (not followed), in walk order."""
    found: list[Path] = []
    if not Path(root).is_dir():  # the run folder itself may be a link (to scratch space)
        return found
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs) + sorted(files):
            if os.path.islink(os.path.join(folder, name)):
                found.append(Path(folder) / name)
                if len(found) >= limit:
                    return found
    return found


def check_no_links(root: str | Path) -> None:
    """Refuse a run folder that holds a symbolic link anywhere inside (before any job runs)."""
    links = find_links(root)
    if links:
        guard(links[0])  # raises UnsafePathError with the fix


def write_error(err: OSError, path: str | Path) -> WriteError:
    """`err` (raised while writing `path`) as a WriteError that names the path and the fix."""
    why = {errno.ENOSPC: "the file system is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is mounted read-only"}.get(err.errno, err.strerror)
    fix = ("free space there (df -h shows it) and rerun the same command; nothing half-written "
           "was kept" if err.errno in (errno.ENOSPC, errno.EDQUOT) else
           "point output_dir at a writable folder (or remount it read-write) and rerun")
    return WriteError(err.errno, f"cannot write {path}: {why} ({err.strerror}). Fix: {fix}")


@contextlib.contextmanager
def _naming_write_errors(path: Path) -> Iterator[None]:
    """Re-raise a full disk, quota or read-only error as a WriteError naming `path`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise write_error(err, path) from err
        raise


def open_memmap(path: str | Path, mode: str, root: str | Path | None = None,
                **kwargs: Any) -> np.memmap:
    """np.lib.format.open_memmap through `guard` (it follows links), with the space of a new
    array reserved at once: a full disk fails here naming the file, not later inside the
    mapping (where it would kill the process with SIGBUS)."""
    path = guard(path, root)
    with _naming_write_errors(path):
        array = np.lib.format.open_memmap(path, mode=mode, **kwargs)
        if mode == "w+" and array.size:
            with open(path, "rb+") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    return array


def link(source: str | Path, target: str | Path, root: str | Path | None = None) -> None:
    """Publish a finished work file: hard-link it (free, and the work copy stays intact until
    the output is in place), or copy it where links are not possible. Neither the source nor
    the target may be a symbolic link (a hard link to one would publish the link itself)."""
    source, target = guard(source, root), guard(target)
    with _naming_write_errors(target):
        try:
            target.hardlink_to(source)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            shutil.copy2(source, target, follow_symlinks=False)


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
def atomic_path(path: str | Path, root: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    `path` (and, with `root`, the folders below it) must not be a symbolic link (`guard`)."""
    path = guard(path, root)
    with _naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file follows the umask
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming_write_errors(path):
            yield tmp_path
            with open(tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
        _hook("before", path)
        os.replace(tmp_path, path)
        _hook("after", path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, root: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `path` that replaces `path` whole when the block succeeds.
    `path` (and, with `root`, the folders below it) must not be a symbolic link (`guard`)."""
    path = guard(path, root)
    with _naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        with _naming_write_errors(path):
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


def save_csv(path: str | Path, frame: Any, meta: dict | None = None) -> None:
    """`write_csv` with a size/checksum sidecar, for a job's result table: a value edited by hand
    (same shape, another number) is then caught by `load_csv` instead of flowing into the
    figures. The record is written before the table is renamed into place, so a table that
    exists (it marks a path done) always has one, whenever the job is killed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
        _record(tmp, meta, of=path)


def load_csv(path: str | Path, fix: str) -> Any:
    """Verify a table written by `save_csv` against its sidecar, then read it with pandas."""
    import pandas as pd  # on use (module docstring)
    verify(path, fix)
    return pd.read_csv(path)


def _record(path: Path, extra: dict | None = None, of: Path | None = None) -> None:
    """Write the size/checksum sidecar of `path` (beside `of`, where `path` is its temporary
    copy not yet renamed into place)."""
    meta = {"bytes": path.stat().st_size, "sha256": sha256(path), "lrdecay_version": __version__}
    meta.update(extra or {})
    write_json(_sidecar(of or path), meta)


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


def canonical(value: Any) -> Any:
    """`value` rebuilt so that its pickle depends on its values alone, not on which objects it
    shares: every string interned (equal strings become one object), every container a new one
    of the same type (with a state dict's `_metadata`), tensors kept as they are.

    pickle writes an object seen before as a back-reference, so a state whose metrics rows were
    built in this process (their keys are the code's constant strings, one object each) and one
    whose first rows came from a resumed state (keys unpickled as separate objects) held equal
    values in different bytes: a resumed job's state.pt differed from an uninterrupted one's.
    """
    if isinstance(value, str):
        return sys.intern(str(value))
    if isinstance(value, dict):
        rebuilt = type(value)((canonical(k), canonical(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):  # torch's state_dict: module versions
            rebuilt._metadata = canonical(value._metadata)
        return rebuilt
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        return type(value)(canonical(v) for v in value)
    return value


def save_checkpoint(path: str | Path, state: dict, meta: dict | None = None) -> None:
    """torch.save `state` atomically with a size/checksum sidecar; equal states give equal
    bytes (`canonical`), however they were assembled."""
    import torch  # on use (module docstring)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # A handle, not the path: torch names the archive's root folder after a path, so the
        # random temporary name would make identical states differ byte for byte.
        torch.save(canonical(state), handle)
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
    torch.save(canonical(state), buffer)
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
    """Write the sidecar of a .npy filled in place (through `open_memmap`)."""
    array = np.load(guard(path), mmap_mode="r")
    _record(Path(path), {"shape": list(array.shape), "dtype": str(array.dtype), **meta})


def load_array(path: str | Path, fix: str, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """Verify and open a .npy (memory-mapped by default) with its sidecar."""
    meta = verify(path, fix)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise CorruptFileError(f"{path} is not a valid .npy file ({err}). Fix: {fix}") from err
    return array, meta
