"""The suite itself: no network in the test process or in any process it starts, the hub offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from voice_train import presets
from voice_train.errors import VoiceTrainError


def test_this_process_cannot_reach_the_network():
    with pytest.raises(OSError, match="network access blocked"):
        socket.create_connection(("93.184.216.34", 443), timeout=2)
    with pytest.raises(OSError, match="network access blocked"):
        socket.getaddrinfo("huggingface.co", 443)


def test_a_process_started_by_a_test_cannot_reach_it_either():
    code = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "network access blocked" in proc.stderr


def test_the_hub_is_offline_from_the_first_import():
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert constants.HF_HOME == os.environ["HF_HOME"], "the suite's own (empty) cache, never the user's"


def test_a_model_missing_from_the_cache_fails_at_once_with_the_fix():
    started = time.monotonic()
    with pytest.raises(VoiceTrainError, match="HF_HUB_OFFLINE is set and it is not in the cache"):
        presets.model_files("facebook/musicgen-medium")
    assert time.monotonic() - started < 5, "no retries against an unreachable hub"
