"""A FUSE mount that behaves like Google Drive as Colab mounts it, for the durability tests and
``bench/drive_space.py``: ``python tests/drive/drivefs.py BACKING MOUNT --control DIR``.

It passes files through to ``BACKING`` and adds what matters about Drive for a training run:

* **A byte quota** counted as Drive counts it: the files, plus the **bin** (a deleted file, or
  one replaced by a rename, keeps its bytes there for 30 days) plus **revisions** (a file that
  was uploaded and is then changed keeps its earlier version, which counts too). A write past the
  quota fails with ENOSPC, and ``statfs`` (``df``, ``shutil.disk_usage``) reports the quota.
* **Uploads as it goes**: a changed file is uploaded when it is closed; the bytes uploaded are
  counted. Writes can be slowed to a rate (``--write-mb-s``), as a mount that uploads is slow.
* **No links**: hard and symbolic links fail with EPERM; chmod and chown are accepted and change
  nothing.
* **A mount that drops**: while ``CONTROL/fail`` holds an errno name (``EIO``), every call fails
  with it.

``CONTROL/quota`` holds the quota in bytes (read again when it changes); ``CONTROL/stats.json``
is rewritten after every change: ``live``, ``bin`` and ``revisions`` bytes, ``used`` (their sum),
``peak_used``, ``peak_live``, ``uploaded`` bytes, and the counts of ``uploads``, ``deletions``,
``revised_files`` and refused writes (``enospc``). Nothing here is Drive's code: it models the
behaviour that matters to a training run.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import threading
import time
from pathlib import Path

from mfusepy import FUSE, FuseOSError, Operations


class DriveLike(Operations):
    use_ns = True

    def __init__(self, backing: Path, control: Path, write_mb_s: float | None):
        self.root, self.control = backing, control
        self.write_s_per_byte = 1 / (write_mb_s * 1e6) if write_mb_s else 0.0
        self._mutex = threading.RLock()
        self.uploaded_size: dict[str, int] = {}  # path -> size of its uploaded version
        self.dirty: set[str] = set()
        self.live = sum(p.stat().st_size for p in backing.rglob("*") if p.is_file())
        for p in backing.rglob("*"):
            if p.is_file():
                self.uploaded_size["/" + str(p.relative_to(backing))] = p.stat().st_size
        self.bin = self.revisions = self.uploaded = 0
        self.counts = {"uploads": 0, "deletions": 0, "revised_files": 0, "enospc": 0}
        self.peak_used = self.peak_live = 0
        self._quota, self._quota_mtime = 15 * 10**9, None
        self._fail_checked = 0.0
        self._fail: int | None = None
        self._write_stats()

    # -- the model --------------------------------------------------------------------------------

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @property
    def used(self) -> int:
        return self.live + self.bin + self.revisions

    def quota(self) -> int:
        path = self.control / "quota"
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != self._quota_mtime:
                self._quota, self._quota_mtime = int(path.read_text().strip()), mtime
        except (OSError, ValueError):
            pass
        return self._quota

    def _check_mount(self) -> None:
        now = time.monotonic()
        if now - self._fail_checked > 0.05:
            self._fail_checked = now
            try:
                name = (self.control / "fail").read_text().strip()
                self._fail = getattr(errno, name) if name else None
            except OSError:
                self._fail = None
        if self._fail is not None:
            raise FuseOSError(self._fail)

    def _grow(self, delta: int) -> None:
        """Account ``delta`` more live bytes (refused past the quota)."""
        if delta > 0 and self.used + delta > self.quota():
            self.counts["enospc"] += 1
            raise FuseOSError(errno.ENOSPC)
        self.live += delta
        self.peak_live = max(self.peak_live, self.live)
        self.peak_used = max(self.peak_used, self.used)

    def _changed(self, path: str) -> None:
        """``path`` is being changed: an uploaded version of it becomes a revision (once)."""
        if path not in self.dirty:
            self.dirty.add(path)
            kept = self.uploaded_size.get(path, 0)
            if kept:
                self.revisions += kept
                self.counts["revised_files"] += 1
                self.peak_used = max(self.peak_used, self.used)

    def _to_bin(self, path: str, size: int) -> None:
        self.live -= size
        self.bin += size
        self.counts["deletions"] += 1
        self.uploaded_size.pop(path, None)
        self.dirty.discard(path)

    def _write_stats(self) -> None:
        stats = {
            "live": self.live,
            "bin": self.bin,
            "revisions": self.revisions,
            "used": self.used,
            "quota": self.quota(),
            "peak_used": self.peak_used,
            "peak_live": self.peak_live,
            "uploaded": self.uploaded,
            **self.counts,
        }
        tmp = self.control / ".stats.json.tmp"
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, self.control / "stats.json")

    # -- the calls -------------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        self._check_mount()
        try:
            st = os.lstat(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from exc
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        return {key: getattr(st, key) for key in keys}

    def readdir(self, path, fh):
        self._check_mount()
        return [".", "..", *os.listdir(self._full(path))]

    def statfs(self, path):
        block = 4096
        free = max(0, self.quota() - self.used) // block
        return {
            "f_bsize": block,
            "f_frsize": block,
            "f_blocks": self.quota() // block,
            "f_bfree": free,
            "f_bavail": free,
            "f_files": 10**6,
            "f_ffree": 10**6,
            "f_favail": 10**6,
            "f_namemax": 255,
        }

    def mkdir(self, path, mode):
        self._check_mount()
        os.mkdir(self._full(path), 0o755)
        return 0

    def rmdir(self, path):
        self._check_mount()
        try:
            os.rmdir(self._full(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from exc
        return 0

    def chmod(self, path, mode):  # Drive keeps no modes
        self._check_mount()
        return 0

    def chown(self, path, uid, gid):
        self._check_mount()
        return 0

    def utimens(self, path, times=None):
        self._check_mount()
        os.utime(self._full(path), ns=times)
        return 0

    def link(self, target, source):
        raise FuseOSError(errno.EPERM)

    def symlink(self, target, source):
        raise FuseOSError(errno.EPERM)

    def readlink(self, path):
        raise FuseOSError(errno.EINVAL)

    def access(self, path, amode):
        self._check_mount()
        if not os.path.lexists(self._full(path)):
            raise FuseOSError(errno.ENOENT)
        return 0

    def create(self, path, mode, fi=None):
        self._check_mount()
        with self._mutex:
            self._grow(0)
            fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self.dirty.add(path)
            self._write_stats()
        return fd

    def open(self, path, flags):
        self._check_mount()
        if flags & os.O_TRUNC:  # libfuse 3 hands O_TRUNC to open (atomic_o_trunc)
            self.truncate(path, 0)
        return os.open(
            self._full(path), (flags & ~(os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | os.O_RDWR
        )

    def read(self, path, size, offset, fh):
        self._check_mount()
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self._check_mount()
        with self._mutex:
            size = os.fstat(fh).st_size
            self._changed(path)
            self._grow(max(0, offset + len(data) - size))
            written = os.pwrite(fh, data, offset)
        if self.write_s_per_byte:
            time.sleep(len(data) * self.write_s_per_byte)
        return written

    def truncate(self, path, length, fh=None):
        self._check_mount()
        with self._mutex:
            size = os.path.getsize(self._full(path))
            if length != size:
                if length < size:  # the bytes go before the old version is kept as a revision
                    self._grow(length - size)
                    self._changed(path)
                else:
                    self._changed(path)
                    self._grow(length - size)
                os.truncate(self._full(path), length)
                self._write_stats()
        return 0

    def _upload(self, path: str, fh: int) -> None:
        if path in self.dirty:  # uploaded whole once closed
            self.dirty.discard(path)
            size = os.fstat(fh).st_size
            self.uploaded += size
            self.uploaded_size[path] = size
            self.counts["uploads"] += 1
            self._write_stats()

    def flush(self, path, fh):  # close() waits for this one (release comes later)
        self._check_mount()
        with self._mutex:
            self._upload(path, fh)
        return 0

    def fsync(self, path, datasync, fh):
        self._check_mount()
        os.fsync(fh)
        return 0

    def release(self, path, fh):
        with self._mutex:
            self._upload(path, fh)
            os.close(fh)
        return 0

    def unlink(self, path):
        self._check_mount()
        with self._mutex:
            full = self._full(path)
            size = os.path.getsize(full)
            os.unlink(full)
            self._to_bin(path, size)
            self._write_stats()
        return 0

    def rename(self, old, new):
        self._check_mount()
        with self._mutex:
            target = self._full(new)
            if os.path.isfile(target):  # the replaced file goes to the bin
                self._to_bin(new, os.path.getsize(target))
            os.rename(self._full(old), target)
            for table in (self.uploaded_size,):
                if old in table:
                    table[new] = table.pop(old)
            if old in self.dirty:
                self.dirty.discard(old)
                self.dirty.add(new)
            if os.path.isdir(target):  # a directory: move what is known of the files under it
                prefix = old.rstrip("/") + "/"
                for key in [k for k in self.uploaded_size if k.startswith(prefix)]:
                    self.uploaded_size[new.rstrip("/") + "/" + key[len(prefix) :]] = self.uploaded_size.pop(
                        key
                    )
            self._write_stats()
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mount", type=Path)
    parser.add_argument("--control", type=Path, required=True, help="quota, fail and stats.json live here")
    parser.add_argument("--write-mb-s", type=float, default=None, help="slow writes to this rate")
    args = parser.parse_args()
    for folder in (args.backing, args.mount, args.control):
        folder.mkdir(parents=True, exist_ok=True)
    fs = DriveLike(args.backing.resolve(), args.control.resolve(), args.write_mb_s)
    FUSE(fs, str(args.mount), foreground=True, nothreads=False, fsname="drivelike", allow_other=False)


if __name__ == "__main__":
    main()
