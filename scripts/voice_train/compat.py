"""Make `import audiocraft` work on Python 3.12 runtimes that have no xformers wheels.

audiocraft 1.3.0 does ``from xformers import ops`` when its transformer module is imported.
With the ``torch`` attention backend, MusicGen's LM only ever touches three names from it:

* ``ops.unbind`` - the same operation as ``torch.unbind``;
* ``ops.LowerTriangularMask`` - used as a "this attention is causal" marker; the torch path
  then calls ``scaled_dot_product_attention(..., is_causal=True)``;
* ``ops.memory_efficient_attention`` - imported by a compatibility check, called only by the
  ``xformers`` backend.

It also asks ``xformers.profiler`` whether a profiler is running (an ImportError means no).

When xformers is not installed, :func:`install_xformers_standin` registers a small module
under that name that provides the first two and makes every other name raise a clear error,
and an empty profiler registry. They are plain module objects, so that ``torch.compile`` can
trace audiocraft's imports of them without breaking its graph. When the real xformers is
installed it is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch

STANDIN_FLAG = "__voice_train_standin__"
BACKENDS = ("torch", "xformers")


class XformersUnavailable(RuntimeError):
    """Something asked for a real xformers feature while only the stand-in is installed."""


def _missing(name: str):
    def fail(*_args, **_kwargs):
        raise XformersUnavailable(
            f"xformers.ops.{name} was called, but xformers is not installed (a stand-in module is "
            "registered so that audiocraft imports); set model.attention_backend: torch in the config"
        )

    fail.__name__ = name
    return fail


class _LowerTriangularMask:
    """Marker for causal attention; audiocraft's torch backend only tests it for None."""

    def __repr__(self) -> str:
        return "LowerTriangularMask()"


def _ops_getattr(name: str):
    """Module-level ``__getattr__`` of the stand-in ``xformers.ops``: unknown names fail clearly."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)


class _NoProfiler:
    """xformers' profiler registry, empty: audiocraft asks it whether a profiler is running."""

    _CURRENT_PROFILER = None


def _module(name: str, **attributes) -> types.ModuleType:
    # Plain module objects (not a subclass): torch.compile traces imports only of those.
    module = types.ModuleType(name)
    setattr(module, STANDIN_FLAG, True)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def xformers_installed() -> bool:
    """True when a real xformers (not our stand-in) can be imported."""
    module = sys.modules.get("xformers")
    if module is not None:
        return not getattr(module, STANDIN_FLAG, False)
    return importlib.util.find_spec("xformers") is not None


def standin_active() -> bool:
    return getattr(sys.modules.get("xformers"), STANDIN_FLAG, False)


def install_xformers_standin() -> bool:
    """Register the stand-in when xformers is missing. Returns True if the stand-in is in use."""
    if standin_active():
        return True
    if xformers_installed():
        return False
    ops = _module(
        "xformers.ops",
        unbind=torch.unbind,
        LowerTriangularMask=_LowerTriangularMask,
        memory_efficient_attention=_missing("memory_efficient_attention"),
        __getattr__=_ops_getattr,
    )
    profiler = _module("xformers.profiler.profiler", _Profiler=_NoProfiler)
    profiler_package = _module("xformers.profiler", __path__=[], profiler=profiler)
    # __path__ makes it a package, so that `import xformers.ops` works.
    package = _module("xformers", __path__=[], ops=ops, profiler=profiler_package)
    sys.modules.update(
        {
            "xformers": package,
            "xformers.ops": ops,
            "xformers.profiler": profiler_package,
            "xformers.profiler.profiler": profiler,
        }
    )
    return True


def setup_audiocraft(attention_backend: str = "torch") -> str:
    """Import audiocraft with the chosen attention backend; returns the backend in use.

    Raises ValueError when ``xformers`` is asked for but is not installed.
    """
    if attention_backend not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, not {attention_backend!r}")
    if attention_backend == "xformers" and not xformers_installed():
        raise ValueError(
            "model.attention_backend is 'xformers' but xformers is not installed; "
            "set model.attention_backend: torch (no xformers wheels exist for this Python)"
        )
    install_xformers_standin()
    from audiocraft.modules import transformer

    transformer.set_efficient_attention_backend(attention_backend)
    return attention_backend
