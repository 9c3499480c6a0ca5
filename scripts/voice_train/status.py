"""train_status.json: the runbook's status file, rewritten atomically as training goes."""

from __future__ import annotations

import math
import time

from .fsutil import write_json_atomic

JOB_TYPE = "tts_voice_train"


def strict_json(value):
    """``value`` with every non-finite float (a skipped fp16 step's inf/NaN gradient norm) as None,
    so that strict JSON readers accept the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class StatusWriter:
    """train_status.json, rewritten atomically; mirrored to the state dir (which survives a failure,
    when Snakemake removes the failed job's outputs)."""

    def __init__(self, path: str, mirror: str | None, base: dict) -> None:
        self.path, self.mirror, self.base = path, mirror, base
        self.last: dict | None = None

    def write(self, **fields) -> dict:
        data = strict_json({**self.base, **fields, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for path in (self.path, self.mirror):
            if path:
                write_json_atomic(path, data)
        self.last = fields
        return data
