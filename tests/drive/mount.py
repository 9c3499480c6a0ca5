"""Start and stop the Drive-like mount (``tests/drive/drivefs.py``) from tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DRIVEFS = Path(__file__).with_name("drivefs.py")


@dataclass
class DriveMount:
    mount: Path  # where the workflow writes, as /content/drive/MyDrive on Colab
    backing: Path  # the files behind it
    control: Path

    def stats(self) -> dict:
        return json.loads((self.control / "stats.json").read_text())

    def set_quota(self, n_bytes: int) -> None:
        (self.control / "quota").write_text(str(int(n_bytes)))
        time.sleep(0.05)

    def fail_with(self, errno_name: str) -> None:
        """Every call on the mount fails with ``errno_name`` (``EIO``: a dropped mount); '' heals it."""
        (self.control / "fail").write_text(errno_name)
        time.sleep(0.1)


@contextlib.contextmanager
def drive_mount(root: Path, quota: int = 15 * 10**9, write_mb_s: float | None = None) -> Iterator[DriveMount]:
    """A Drive-like mount under ``root`` for the duration of the ``with`` block."""
    drive = DriveMount(root / "mnt", root / "backing", root / "control")
    for folder in (drive.mount, drive.backing, drive.control):
        folder.mkdir(parents=True, exist_ok=True)
    drive.set_quota(quota)
    command = [
        sys.executable,
        str(DRIVEFS),
        str(drive.backing),
        str(drive.mount),
        "--control",
        str(drive.control),
    ]
    if write_mb_s:
        command += ["--write-mb-s", str(write_mb_s)]
    log = open(root / "drivefs.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(drive.mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the drive-like mount did not start: {(root / 'drivefs.log').read_text()}"
                )
            time.sleep(0.05)
        yield drive
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(drive.mount)], check=False, capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
