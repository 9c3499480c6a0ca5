"""Test-only hooks for every Python process started with this folder on PYTHONPATH.

The test suite puts this folder on PYTHONPATH for itself and every process it starts
(snakemake, its job scripts), so the hooks reach them all:

* ``VOICE_TRAIN_TEST_OFFLINE=1`` refuses every network connection (IPv4/IPv6 sockets and name
  lookups; local Unix sockets stay): the suite is hermetic, and a test that would reach the
  Hugging Face hub fails at once instead of waiting on retries.
* ``VOICE_TRAIN_TEST_SLOW="soundfile.write=0.5,soundfile.read=0.3"`` makes each call of
  ``soundfile.write`` sleep 0.5 s first, and so on. The kill tests use it so that a job of the
  tiny demo stays busy long enough to be killed mid-way on any machine, however fast.
"""

import functools
import importlib
import os
import socket
import time


class NetworkBlocked(OSError):
    """A test process tried to reach the network."""


def block_network() -> None:
    """Refuse connections and name lookups everywhere but on Unix sockets and the loopback host."""

    def refuse(what):
        def fail(*args, **kwargs):
            raise NetworkBlocked(f"network access blocked in tests: {what}{args[1:2] or args[:1]}")

        return fail

    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def local(sock, address) -> bool:
        return sock.family == socket.AF_UNIX or (
            isinstance(address, tuple) and str(address[0]) in ("127.0.0.1", "::1", "localhost")
        )

    def connect(self, address):
        if not local(self, address):
            refuse("connect")(self, address)
        return original_connect(self, address)

    def connect_ex(self, address):
        if not local(self, address):
            refuse("connect_ex")(self, address)
        return original_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            refuse("getaddrinfo")(None, host)
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo


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


if os.environ.get("VOICE_TRAIN_TEST_OFFLINE") == "1":
    block_network()
_slow_down(os.environ.get("VOICE_TRAIN_TEST_SLOW", ""))
