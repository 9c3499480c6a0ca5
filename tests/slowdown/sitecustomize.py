"""Test-only: slow chosen functions down in every Python process started with this folder on PYTHONPATH.

``VOICE_TRAIN_TEST_SLOW="soundfile.write=0.5,soundfile.read=0.3"`` makes each call of
``soundfile.write`` sleep 0.5 s first, and so on. The kill tests use it so that a job of the
tiny demo stays busy long enough to be killed mid-way on any machine, however fast.
"""

import functools
import importlib
import os
import time


def _slow_down(spec: str) -> None:
    for item in filter(None, spec.split(",")):
        target, seconds = item.split("=")
        module_name, name = target.rsplit(".", 1)
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        @functools.wraps(original)
        def slow(*args, _original=original, _seconds=float(seconds), **kwargs):
            time.sleep(_seconds)
            return _original(*args, **kwargs)

        setattr(module, name, slow)


_slow_down(os.environ.get("VOICE_TRAIN_TEST_SLOW", ""))
