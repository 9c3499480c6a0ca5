"""Progress bars that read well both on a terminal and in a rule's log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr; in a log file (not a terminal) it updates every 10 s, not per step."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 10.0)
    kwargs.setdefault("dynamic_ncols", interactive)
    kwargs.setdefault("ascii", not interactive)
    return tqdm(iterable, file=sys.stderr, **kwargs)
