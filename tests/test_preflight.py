"""Each preflight check, on small generated files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import write_flac
from voice_train.errors import VoiceTrainError
from voice_train.preflight import PreflightSettings, run_preflight, sniff_container

LENIENT = PreflightSettings(min_bytes=1000, min_duration_s=5)


def refused(path, settings=LENIENT) -> str:
    with pytest.raises(VoiceTrainError) as info:
        run_preflight(path, settings)
    message = str(info.value)
    assert message.startswith(str(path)), "the error must name the file"
    assert "; fix: " in message and "\n" not in message, "one line with the fix"
    return message


def test_good_recording_gives_a_complete_marker(voice_flac):
    marker = run_preflight(voice_flac, LENIENT)
    assert marker["format"] == "FLAC"
    assert marker["sample_rate"] == 48000 and marker["channels"] == 2
    assert marker["frames"] == sf.info(str(voice_flac)).frames
    assert marker["duration_s"] == pytest.approx(40, abs=0.01)
    assert marker["bytes"] == voice_flac.stat().st_size
    assert len(marker["sha256"]) == 64
    assert -4 < marker["peak_dbfs"] < -2
    assert 0.2 < marker["silence_ratio"] < 0.7
    assert marker["clipped_ratio"] == 0 and marker["warnings"] == []


def test_missing_file(tmp_path):
    assert "not found" in refused(tmp_path / "nope.flac")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    assert "empty" in refused(path)


def test_git_lfs_pointer(tmp_path):
    path = tmp_path / "lfs.flac"
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345678\n"
    )
    message = refused(path)
    assert "Git LFS pointer" in message and "git lfs pull" in message


def test_file_under_the_size_limit(voice_flac):
    message = refused(voice_flac, PreflightSettings(min_bytes=50_000_000, min_duration_s=5))
    assert "preflight.min_bytes" in message


def test_random_bytes_named_flac(tmp_path):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(0).bytes(200_000))
    assert "not audio" in refused(path)


def test_wav_named_flac(tmp_path, voice_48k_stereo):
    path = tmp_path / "really_wav.flac"
    sf.write(str(path), voice_48k_stereo, 48000, format="WAV")
    message = refused(path)
    assert "WAV" in message and "ffmpeg" in message


@pytest.mark.parametrize(
    ("head", "kind"), [(b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3"), (b"\xff\xfb\x90d", "MP3")]
)
def test_mp3_is_recognised(head, kind):
    assert sniff_container(head + b"\x00" * 64) == kind


def test_truncated_flac(tmp_path, voice_flac):
    data = voice_flac.read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[: len(data) // 2])
    assert sf.info(str(path)).frames == sf.info(str(voice_flac)).frames, "the header still claims it all"
    message = refused(path)
    assert "truncated" in message or "decoding failed" in message


def test_digital_silence(tmp_path):
    path = write_flac(tmp_path / "silence.flac", np.zeros((48000 * 10, 1), np.float32), 48000)
    assert "digital silence" in refused(path)


def test_near_silence(tmp_path):
    quiet = np.random.default_rng(1).normal(0, 10 ** (-75 / 20), (48000 * 10, 1)).astype(np.float32)
    assert "silent" in refused(write_flac(tmp_path / "quiet.flac", quiet, 48000))


def test_steady_hum_is_not_speech(tmp_path):
    t = np.arange(48000 * 10) / 48000
    hum = (0.05 * np.sin(2 * np.pi * 50 * t))[:, None].astype(np.float32)
    assert "speech-like" in refused(write_flac(tmp_path / "hum.flac", hum, 48000))


def test_too_short(tmp_path, voice_48k_stereo):
    path = write_flac(tmp_path / "short.flac", voice_48k_stereo[: 48000 * 2], 48000)
    assert "min_duration_s" in refused(path)


def test_clipping_is_measured_and_warned(tmp_path, voice_48k_stereo):
    loud = np.clip(voice_48k_stereo * 8, -1, 1)
    marker = run_preflight(write_flac(tmp_path / "clipped.flac", loud, 48000), LENIENT)
    assert marker["clipped_ratio"] > 0.001
    assert any("clipped" in w for w in marker["warnings"])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000, 96000])
def test_sample_rates_pass(tmp_path, rate):
    from voice_train.demo import synthesize_voice

    audio = synthesize_voice(duration_s=12, sample_rate=rate, channels=1, seed=1).audio
    marker = run_preflight(write_flac(tmp_path / f"v{rate}.flac", audio, rate), LENIENT)
    assert marker["sample_rate"] == rate
    assert any("band-limited" in w for w in marker["warnings"]) == (rate < 16000)


def test_below_8khz_is_refused(tmp_path):
    audio = np.random.default_rng(0).normal(0, 0.1, (6000 * 10, 1)).astype(np.float32)
    assert "below 8000 Hz" in refused(write_flac(tmp_path / "v6k.flac", audio, 6000))


def test_24_bit_six_channels(tmp_path, voice_48k_stereo):
    six = np.repeat(voice_48k_stereo[:, :1], 6, axis=1) * np.linspace(0.5, 1, 6)
    marker = run_preflight(write_flac(tmp_path / "six.flac", six, 48000, subtype="PCM_24"), LENIENT)
    assert marker["channels"] == 6 and marker["subtype"] == "PCM_24"
