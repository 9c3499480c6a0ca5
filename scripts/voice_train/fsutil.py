"""Atomic file writes and streamed hashing."""

from __future__ import annotations

import contextlib
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
