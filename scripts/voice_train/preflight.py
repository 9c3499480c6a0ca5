"""Preflight: prove the source recording is a complete, usable FLAC before any work.

Its level checks judge the speech, not the recorder: they are made after the DC offset,
rumble (a high-pass at ``filters.VOICE_HIGHPASS_HZ``) and any mains hum found in the
recording are taken out. The speech's SNR is measured on excerpts spread over the recording,
with the voice activity detector that prepare uses, one SNR per excerpt: the recording's is their
median, so a noisy stretch (a vacuum cleaner, a passing lorry) does not fail a recording that is
clean elsewhere; prepare drops that stretch's clips.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .audio import (
    BLOCK_FRAMES,
    FramePower,
    amplitude_db,
    downmix,
    frame_power,
    iter_blocks,
    prefetched,
    read_excerpts,
    to_db,
)
from .errors import VoiceTrainError
from .filters import EXCERPT_S, EXCERPTS, VOICE_HIGHPASS_HZ, Hum, SpeechFilter, find_hum
from .fsutil import LFS_POINTER_PREFIX, sha256_file
from .noise import recording_snr_db
from .vad import VAD_RATE, frame_probabilities, window_probabilities

log = logging.getLogger(__name__)

MARKER_SCHEMA = "voice_preflight/1"
# A sample at or above this magnitude counts as clipped (-0.01 dBFS).
CLIP_LEVEL = 0.999
# Level statistics use 50 ms frames: short enough to see pauses between words.
LEVEL_FRAME_S = 0.05
# Below this rate the recording cannot carry speech intelligibly.
MIN_SAMPLE_RATE = 8000
# Below this rate the voice will sound band-limited after upsampling; warn.
WARN_SAMPLE_RATE = 16000
# Voice activity and SNR use 10 ms frames, as prepare does.
SPEECH_FRAME_S = 0.01
# A voice activity threshold (speech probability) and the share of speech below which the
# SNR is not judged (no speech heard: the level checks speak for the recording instead).
SPEECH_PROBABILITY = 0.5
MIN_SPEECH_SHARE = 0.05


@dataclass(frozen=True)
class PreflightSettings:
    """Thresholds of the preflight checks (config section ``preflight``)."""

    min_bytes: int = 5_000_000
    min_duration_s: float = 60.0
    silence_dbfs: float = -55.0
    max_silence_ratio: float = 0.95
    min_dynamic_range_db: float = 12.0
    warn_clipped_ratio: float = 0.001
    min_snr_db: float = 3.0
    warn_snr_db: float = 10.0


def _convert_hint(path: Path) -> str:
    return f"convert it with: ffmpeg -i '{path}' -c:a flac '{path.with_suffix('')}.fixed.flac'"


def sniff_container(head: bytes) -> str | None:
    """Name the container ``head`` (the first bytes of a file) looks like, or None if unknown."""
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"ID3"):
        # An ID3v2 tag may precede an MP3 or, rarely, a FLAC stream.
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9] if len(head) >= 10 else 0
        inner = head[10 + size : 14 + size]
        return "FLAC (with an ID3 tag)" if inner == b"fLaC" else "MP3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "MP3"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head.startswith(b"FORM"):
        return "AIFF"
    return None


def check_file(path: Path, settings: PreflightSettings) -> int:
    """Existence, Git LFS pointer, size and container checks; returns the size in bytes."""
    if not path.exists():
        raise VoiceTrainError(
            path,
            "audio file not found",
            "put the recording there, or point the voice's 'source' at it in the config",
        )
    if not path.is_file():
        raise VoiceTrainError(path, "is not a regular file", "point 'source' at a .flac file")
    size = path.stat().st_size
    if size == 0:
        raise VoiceTrainError(path, "file is empty (0 bytes)", "copy the real recording there again")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(LFS_POINTER_PREFIX):
        raise VoiceTrainError(
            path,
            f"is a Git LFS pointer ({size} bytes), not the audio",
            "run 'git lfs pull' in the repository (or copy the real FLAC there)",
        )
    if size < settings.min_bytes:
        raise VoiceTrainError(
            path,
            f"is only {size} bytes, below preflight.min_bytes ({settings.min_bytes})",
            "use the full recording, or lower preflight.min_bytes if this one is complete",
        )
    kind = sniff_container(head)
    if kind is None:
        raise VoiceTrainError(path, "is not audio (unrecognised bytes)", _convert_hint(path))
    if kind == "FLAC (with an ID3 tag)":
        raise VoiceTrainError(
            path, "is a FLAC with a leading ID3 tag, which the decoder rejects", _convert_hint(path)
        )
    if kind != "FLAC":
        raise VoiceTrainError(path, f"is a {kind} file with a .flac name, not FLAC", _convert_hint(path))
    return size


@dataclass
class LevelStats:
    """What one streamed decode of the recording measured."""

    frames: int
    peak: float
    mean_square: float
    clipped_ratio: float
    dc_offset: float  # mean sample value (of the channel with the largest)
    frame_db: np.ndarray  # level of each 50 ms frame of the filtered mono downmix, in dBFS
    raw_frame_db: np.ndarray  # the same before filtering


def measure_levels(
    path: Path,
    sample_rate: int,
    hum: Hum | None = None,
    block_frames: int = BLOCK_FRAMES,
    threads: int = 1,
) -> LevelStats:
    """Decode the whole file block by block and measure levels; decoder errors propagate.

    Peak, clipping and DC offset are the file's own samples; frame levels are measured both
    as recorded and after the speech filter (high-pass and ``hum`` notches). With ``threads``
    > 1 the decoding runs a few blocks ahead in a second thread (the figures are the same).
    """
    frames = 0
    peak = 0.0
    sum_sq = 0.0
    clipped = 0
    samples = 0
    sums = None
    hop = max(1, round(sample_rate * LEVEL_FRAME_S))
    expected = sf.info(str(path)).frames
    power, raw_power = FramePower(hop, expected), FramePower(hop, expected)
    speech_filter = SpeechFilter(sample_rate, VOICE_HIGHPASS_HZ, hum)
    blocks = iter_blocks(path, block_frames)
    for block in prefetched(blocks) if threads > 1 else blocks:
        frames += block.shape[0]
        samples += block.size
        mags = np.abs(block)
        peak = max(peak, float(mags.max()))
        clipped += int(np.count_nonzero(mags >= CLIP_LEVEL))
        sum_sq += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
        column_sums = block.sum(axis=0, dtype=np.float64)
        sums = column_sums if sums is None else sums + column_sums
        mono = downmix(block)
        raw_power.feed(mono)
        power.feed(speech_filter(mono))
    return LevelStats(
        frames=frames,
        peak=peak,
        mean_square=sum_sq / samples if samples else 0.0,
        clipped_ratio=clipped / samples if samples else 0.0,
        dc_offset=float(np.max(np.abs(sums)) / frames) if frames else 0.0,
        frame_db=np.asarray(to_db(power.result())),
        raw_frame_db=np.asarray(to_db(raw_power.result())),
    )


@dataclass(frozen=True)
class SpeechStats:
    """What the excerpts said about the speech: its share of the time and its SNR."""

    speech_share: float
    snr_db: float | None  # the median of the excerpts'; None when too little speech was heard to judge
    excerpt_snr_db: tuple[float, ...] = ()  # each excerpt's that held speech, in order


def measure_speech(excerpts: list[np.ndarray], sample_rate: int, hum: Hum | None) -> SpeechStats:
    """Voice activity and SNR of the excerpts, after the speech filter (as prepare hears them)."""
    powers, speech = [], []
    for excerpt in excerpts:
        filtered = SpeechFilter(sample_rate, VOICE_HIGHPASS_HZ, hum)(excerpt)
        audio = (
            soxr.resample(filtered, sample_rate, VAD_RATE, quality="HQ")
            if sample_rate != VAD_RATE
            else filtered
        )
        power = frame_power(audio, int(VAD_RATE * SPEECH_FRAME_S))
        windows = window_probabilities(lambda a, b, x=audio: x[a:b], audio.size, VAD_RATE)
        powers.append(power)
        speech.append(frame_probabilities(windows, power.size, SPEECH_FRAME_S) >= SPEECH_PROBABILITY)
    active = np.concatenate(speech)
    share = float(active.mean()) if active.size else 0.0
    if share < MIN_SPEECH_SHARE:
        return SpeechStats(share, None)
    snrs = tuple(recording_snr_db(p, a) for p, a in zip(powers, speech) if a.mean() >= MIN_SPEECH_SHARE)
    return SpeechStats(share, float(np.median(snrs)), snrs)


def run_preflight(path: str | Path, settings: PreflightSettings, threads: int = 1) -> dict:
    """Check ``path`` and return the preflight marker; raise ``VoiceTrainError`` on any failure.

    The file must exist, not be a Git LFS pointer, be at least ``min_bytes``, be a real
    FLAC that decodes to the end (the frame count its header claims), last at least
    ``min_duration_s``, and hold audible, level-varying sound whose speech stands at least
    ``min_snr_db`` above the noise. The levels are judged after the DC offset, rumble and mains
    hum are taken out, so a recorder's artefacts neither pass nor fail a recording. Clipping is
    measured and warned about, not refused. ``threads`` > 1 decodes ahead of the level analysis.
    """
    path = Path(path)
    size = check_file(path, settings)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise VoiceTrainError(
            path, f"has a FLAC signature but cannot be opened ({exc})", "re-export or re-copy the file"
        ) from exc
    if info.samplerate < MIN_SAMPLE_RATE:
        raise VoiceTrainError(
            path,
            f"sample rate {info.samplerate} Hz is below {MIN_SAMPLE_RATE} Hz",
            "record or export at 16 kHz or more (44.1 or 48 kHz is best)",
        )
    claimed_s = info.frames / info.samplerate
    try:
        excerpts = read_excerpts(path, EXCERPT_S, EXCERPTS)
        hum = find_hum(excerpts, info.samplerate)
        stats = measure_levels(path, info.samplerate, hum, threads=threads)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise VoiceTrainError(
            path,
            f"decoding failed part-way through a {claimed_s:.1f} s recording ({exc})",
            "the file is damaged or truncated: re-export or re-copy it",
        ) from exc
    if stats.frames < info.frames:
        raise VoiceTrainError(
            path,
            f"is truncated: decoded {stats.frames / info.samplerate:.1f} s of the "
            f"{claimed_s:.1f} s its header claims",
            "the copy is incomplete: re-copy or re-export it",
        )
    duration_s = stats.frames / info.samplerate
    if duration_s < settings.min_duration_s:
        raise VoiceTrainError(
            path,
            f"lasts {duration_s:.1f} s, below preflight.min_duration_s ({settings.min_duration_s:g} s)",
            "use a longer recording (minutes of speech), or lower preflight.min_duration_s",
        )
    if stats.peak == 0.0:
        raise VoiceTrainError(path, "is digital silence (every sample is 0)", "check the recording's input")
    frame_db = stats.frame_db
    silence_ratio = _silence_ratio(frame_db, settings)
    if silence_ratio > settings.max_silence_ratio:
        if _silence_ratio(stats.raw_frame_db, settings) <= settings.max_silence_ratio:
            raise VoiceTrainError(
                path,
                f"has no speech-like level changes: {silence_ratio:.0%} of it is below "
                f"{settings.silence_dbfs:g} dBFS once the DC offset, rumble below {VOICE_HIGHPASS_HZ:g} Hz "
                f"and mains hum are taken out (only hum or rumble?)",
                "check that the microphone was connected and on, or choose the right file",
            )
        raise VoiceTrainError(
            path,
            f"is (near-)silent: {silence_ratio:.0%} of it is below {settings.silence_dbfs:g} dBFS "
            f"(limit preflight.max_silence_ratio = {settings.max_silence_ratio:g})",
            "check the recording's input and gain, or choose the right file",
        )
    speech = measure_speech(excerpts, info.samplerate, hum)
    if speech.snr_db is not None and speech.snr_db < settings.min_snr_db:
        raise VoiceTrainError(
            path,
            f"is too noisy to train on: the speech is only {speech.snr_db:.1f} dB above the noise "
            f"(SNR {speech.snr_db:.1f} dB, below preflight.min_snr_db = {settings.min_snr_db:g})",
            "record closer to the speaker or in a quieter room, use a cleaner copy, or lower "
            "preflight.min_snr_db to train on it anyway",
        )
    loud_db, quiet_db = (float(v) for v in np.percentile(frame_db, [95, 10]))
    dynamic_range_db = loud_db - quiet_db
    # Speech that the detector hears has been judged by its SNR; a flat level is refused only
    # where it hears none (steady noise, hum): noisy speech is refused for its SNR, by name.
    if speech.snr_db is None and dynamic_range_db < settings.min_dynamic_range_db:
        raise VoiceTrainError(
            path,
            f"has no speech-like level changes: loud and quiet parts differ by only "
            f"{dynamic_range_db:.1f} dB (steady hum or noise?)",
            "use a recording of speech with pauses, or lower preflight.min_dynamic_range_db",
        )
    warnings = []
    if stats.clipped_ratio > settings.warn_clipped_ratio:
        warnings.append(
            f"{stats.clipped_ratio:.2%} of samples are clipped (above preflight.warn_clipped_ratio = "
            f"{settings.warn_clipped_ratio:g}); the voice may sound distorted: record at a lower gain"
        )
    if info.samplerate < WARN_SAMPLE_RATE:
        warnings.append(
            f"sample rate {info.samplerate} Hz: the voice will sound band-limited (use 44.1/48 kHz)"
        )
    if speech.snr_db is not None and speech.snr_db < settings.warn_snr_db:
        warnings.append(
            f"the speech is only {speech.snr_db:.1f} dB above the noise (below preflight.warn_snr_db = "
            f"{settings.warn_snr_db:g}): the model will learn the noise with the voice; a cleaner "
            "recording helps most"
        )
    noisy = [v for v in speech.excerpt_snr_db if v < settings.min_snr_db]
    if noisy and speech.snr_db is not None and speech.snr_db >= settings.min_snr_db:
        warnings.append(
            f"{len(noisy)} of the {len(speech.excerpt_snr_db)} excerpts listened to have speech less "
            f"than preflight.min_snr_db = {settings.min_snr_db:g} dB above the noise (down to "
            f"{min(noisy):.1f} dB): prepare drops the clips of such stretches (summary.dropped_noisy)"
        )
    if speech.snr_db is None:
        warnings.append(
            f"the voice activity detector heard speech in only {speech.speech_share:.0%} of the "
            "excerpts it listened to: is this a recording of speech?"
        )
    for message in warnings:
        log.warning("%s: %s", path, message)
    return {
        "schema": MARKER_SCHEMA,
        "source": str(path),
        "bytes": size,
        "sha256": sha256_file(path),
        "format": info.format,
        "subtype": info.subtype,
        "sample_rate": info.samplerate,
        "channels": info.channels,
        "frames": stats.frames,
        "duration_s": round(duration_s, 3),
        "peak_dbfs": round(amplitude_db(stats.peak), 2),
        "rms_dbfs": round(float(to_db(stats.mean_square)), 2),
        "dc_offset_dbfs": round(amplitude_db(stats.dc_offset), 2),
        "highpass_hz": VOICE_HIGHPASS_HZ,
        "hum": None if hum is None else asdict(hum) | {"harmonics": list(hum.harmonics)},
        "loud_dbfs": round(loud_db, 2),
        "quiet_dbfs": round(quiet_db, 2),
        "dynamic_range_db": round(dynamic_range_db, 2),
        "silence_ratio": round(silence_ratio, 4),
        "speech_share": round(speech.speech_share, 4),
        "snr_db": None if speech.snr_db is None else round(speech.snr_db, 2),
        "excerpt_snr_db": [round(v, 2) for v in speech.excerpt_snr_db],
        "clipped_ratio": round(stats.clipped_ratio, 6),
        "warnings": warnings,
        "settings": asdict(settings),
    }


def _silence_ratio(frame_db: np.ndarray, settings: PreflightSettings) -> float:
    return float(np.mean(frame_db < settings.silence_dbfs)) if frame_db.size else 1.0
