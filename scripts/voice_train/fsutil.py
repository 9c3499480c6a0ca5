"""Atomic file writes and streamed hashing."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

# How a Git LFS pointer file begins: a checkout without `git lfs pull` holds these instead of audio.
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
_ZIP_END = b"PK\x05\x06"  # a zip archive (torch.save's format) ends with this record


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file lives in the same directory, so the rename is atomic: readers see
    either the old file or the complete new one, never a partial write. On error the
    temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or target.suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp_path, 0o755)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        yield tmp_path
        # Move the old directory aside first, so a complete one is in place at every moment
        # but the instant between the two renames.
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp_path, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted atomic write of ``path`` left beside it; return those paths.

    A job killed hard (kill -9, a dead Colab runtime) cannot clean up its ``.<name>.*`` temp
    files or directories; they are never the file itself, so removing them loses nothing.
    Call this only where no other writer of ``path`` can be running (Snakemake's lock).
    """
    target = Path(path)
    removed = []
    if not target.parent.is_dir():
        return removed
    for leftover in target.parent.glob(f".{glob_escape(target.name)}.*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict | None:
    """``path``'s JSON, or None when it is missing or not valid JSON (for reports of any state)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sha256_file(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in blocks (flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block_size):
            digest.update(chunk)
    return digest.hexdigest()


class SaveFailed(Exception):
    """A save that was refused or failed; every earlier save is untouched. ``str()`` is one line."""

    def __init__(self, path: Path, needed: int, free: int | None, reason: str):
        self.path, self.needed, self.free, self.reason = path, needed, free, reason
        free_text = f", {format_bytes(free)} free" if free is not None else ""
        self.size_text = f"{format_bytes(needed)} to write{free_text}"
        super().__init__(f"{path} ({self.size_text}): {reason}")


def format_bytes(n: int | float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} bytes"


def object_bytes(obj) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about its saved size."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(object_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(object_bytes(v) for v in obj)
    return 0


def mount_type(path: str | os.PathLike) -> str:
    """The file system type of the mount that holds ``path`` (``ext4``, ``fuse.drive``, ...), from
    /proc/self/mounts; ``""`` where that cannot be read (not Linux)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Free bytes of the file system holding ``directory`` (a Drive mount reports its quota)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def is_complete(path: Path) -> bool:
    """Whether ``path`` ends in a whole zip archive: a save cut short does not."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 65_558))  # the end record and the longest zip comment
            return size > 0 and _ZIP_END in handle.read()
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory (FUSE mounts may not)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_save(obj: dict, path: str | os.PathLike, extra_bytes: int = 0) -> int:
    """``torch.save`` ``obj`` as ``path``: complete or absent (see the module docstring); its size.

    The temporary directory keeps the file's own name, which torch writes into the archive, so the
    same object gives the same bytes. ``extra_bytes`` asks for that much more free space (what is
    still to be written after this file). Raises :class:`SaveFailed`.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = object_bytes(obj) + (1 << 20)  # + pickled structure, names, history
    free = free_bytes(path.parent)
    if free is not None and free < needed + extra_bytes:
        raise SaveFailed(path, needed + extra_bytes, free, "not enough free space, so it was not written")
    tmp_dir = None
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        tmp = tmp_dir / path.name
        torch.save(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if not is_complete(tmp):
            raise OSError(errno.EIO, "the written file does not end in a whole archive")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return path.stat().st_size
    except OSError as exc:
        raise SaveFailed(path, needed, free, exc.strerror or str(exc)) from exc
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
