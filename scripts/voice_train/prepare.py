"""Prepare: turn a checked source FLAC into loudness-normalised clips and a manifest.

Streamed passes keep memory flat however long the recording. The first decodes, downmixes
and resamples to the model's rate, takes out what is not voice (DC offset and rumble with a
high-pass, mains hum with notches; see ``filters``), and spools the float32 samples to a
temporary raw file while measuring frame levels and loudness. The voice activity detector
then reads the spool (``vad``). With ``speakers.enabled``, the speech is screened for voices
(``speakers``): only the target voice's speech is cut into clips, and other voices' speech is a
wall no clip spans. The clips are cut in the pauses (``segment``). Each clip's SNR is measured
against the noise around it (``noise``); the last pass cuts each clip that is kept out of the
spool, applies its gain and writes it as FLAC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import FramePower, amplitude_db, downmix, iter_mono_resampled, read_excerpts, to_db
from .errors import VoiceTrainError
from .filters import EXCERPT_S, EXCERPTS, Hum, SpeechFilter, find_hum
from .fsutil import atomic_dir, sha256_file, write_json_atomic, write_text_atomic
from .loudness import STEP_S, LoudnessMeter, gated_loudness
from .noise import span_snr_db
from .progress import progress
from .rule import CONSOLE_LOGGER
from .segment import Clip, SegmentSettings, segment_at_pauses, speech_runs, speech_threshold_db
from .speakers import (
    STRETCH_GAP_S,
    SpeakerLabels,
    SpeakerSettings,
    clip_speech,
    embed_clip,
    screen_speakers,
)
from .splits import SPLITS, assign_splits
from .vad import frame_probabilities, window_probabilities

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "voice_dataset/1"
MANIFEST_MODE = "voice_dataset"
# Segmentation works on 10 ms frames: fine enough to place cuts inside short pauses.
FRAME_S = 0.01
_SPOOL_DTYPE = np.float32
# How far around a clip its noise is looked for, nearest first (seconds on each side).
SNR_CONTEXTS_S = (1.0, 2.5, 5.0, 10.0)
PAUSE_DETECTORS = ("vad", "energy")


@dataclass(frozen=True)
class PrepareSettings:
    """Parameters of the prepare step (config section ``prepare``)."""

    sample_rate: int = 32000
    loudness_lufs: float = -20.0
    peak_dbfs: float = -1.0
    valid_fraction: float = 0.1  # of the clips' seconds, in blocks (voice_train.splits)
    test_fraction: float = 0.1  # held out for rule evaluate only
    split_seed: int = 0
    split_guard_s: float = 1.0  # at least this much recording between clips of different splits
    highpass_hz: float = 70.0
    remove_hum: bool = True
    pause_detector: str = "vad"
    vad_threshold: float = 0.5
    min_snr_db: float = 3.0
    segment: SegmentSettings = SegmentSettings()

    @classmethod
    def from_config(cls, section: dict) -> PrepareSettings:
        """Build from the config's ``prepare`` section (segmentation keys go to ``segment``)."""
        segment_keys = set(SegmentSettings.__dataclass_fields__)
        segment = SegmentSettings(**{k: v for k, v in section.items() if k in segment_keys})
        own = {k: v for k, v in section.items() if k not in segment_keys}
        return cls(**own, segment=segment)


@dataclass
class Analysis:
    """What the first pass measured: sample count, 10 ms frame powers and loudness steps."""

    samples: int
    frame_power: np.ndarray  # mean square of each 10 ms frame (after the speech filter)
    loudness_steps: np.ndarray

    @property
    def frame_db(self) -> np.ndarray:
        return np.asarray(to_db(self.frame_power))


def analyse_to_spool(
    source: Path, spool: Path, sample_rate: int, threads: int = 1, speech_filter: SpeechFilter | None = None
) -> Analysis:
    """Decode, downmix, resample and filter ``source``; spool samples to ``spool`` and measure levels.

    ``speech_filter`` (made for ``sample_rate``) is applied before anything is measured or
    spooled. With ``threads`` > 1 the decoding runs a few blocks ahead in a second thread.
    """
    hop = int(round(sample_rate * FRAME_S))
    info = sf.info(str(source))
    total = info.duration
    expected = math.ceil(info.frames * sample_rate / info.samplerate)  # sizes the level buffers
    power = FramePower(hop, expected)
    meter = LoudnessMeter(sample_rate, expected)
    samples = 0
    with open(spool, "wb") as fh, progress(total=round(total), unit="s", desc="analyse") as bar:
        for block in iter_mono_resampled(source, sample_rate, threads=threads):
            if speech_filter is not None:
                block = speech_filter(block)
            block.astype(_SPOOL_DTYPE, copy=False).tofile(fh)
            power.feed(block)
            meter.feed(block)
            before = samples // sample_rate
            samples += block.size
            bar.update(samples // sample_rate - before)
    return Analysis(samples, power.result(), meter.steps())


SPOOL_PREFIX = "voice-train-spool-"


@contextlib.contextmanager
def scratch_spool(scratch_dir: str | Path | None, voice: str) -> Iterator[Path]:
    """A spool file in a folder of its own under ``scratch_dir`` (the system temp dir when
    empty), removed afterwards; folders that killed runs of this voice left there are removed
    first (their process is gone), those of other voices' running jobs are left alone."""
    root = Path(scratch_dir or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{SPOOL_PREFIX}{voice}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"{SPOOL_PREFIX}{voice}-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    try:
        yield folder / "resampled.f32"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_spool(spool: Path, start: int, stop: int) -> np.ndarray:
    """Read samples ``[start, stop)`` of the spool file."""
    itemsize = np.dtype(_SPOOL_DTYPE).itemsize
    with open(spool, "rb") as fh:
        fh.seek(start * itemsize)
        return np.fromfile(fh, dtype=_SPOOL_DTYPE, count=stop - start)


def clip_gain_db(steps: np.ndarray, peak: float, settings: PrepareSettings) -> float:
    """Gain that brings a clip to the target loudness without its peak passing the ceiling."""
    loudness = gated_loudness(steps)
    if not math.isfinite(loudness) or peak <= 0:
        return 0.0
    return min(settings.loudness_lufs - loudness, settings.peak_dbfs - amplitude_db(peak))


def _summary(clips: list[Clip], frame_s: float) -> dict:
    return {"count": len(clips), "duration_s": round(sum(c.frames for c in clips) * frame_s, 3)}


def prepare_dataset(
    source: str | Path,
    marker: dict,
    voice: str,
    description: str,
    dataset_dir: str | Path,
    settings: PrepareSettings,
    threads: int = 1,
    speakers: SpeakerSettings | None = None,
    scratch_dir: str | Path | None = None,
) -> dict:
    """Write clips, per-clip info, ``data.jsonl`` and the manifest under ``dataset_dir``.

    ``marker`` is the preflight marker of ``source``; a source changed since preflight is
    refused. Clips go to ``dataset_dir/clips`` (replaced as a whole, atomically), and the
    manifest is written last, so a manifest on disk always describes complete clips.
    ``threads`` > 1 overlaps decoding with analysis and writes that many clips at a time;
    the outputs are the same bytes for any ``threads``. With ``speakers`` enabled, only the
    target voice's speech makes clips (see ``screen_voices``). The float32 copy of the whole
    recording that the analysis reads several times (~460 MB an hour) goes to ``scratch_dir``
    (default: the system's temp dir), never beside the dataset: on Colab that is Google Drive,
    where every byte is uploaded and a deleted file stays in the bin. Returns the manifest.
    """
    source, dataset_dir = Path(source), Path(dataset_dir)
    if sha256_file(source) != marker["sha256"]:
        raise VoiceTrainError(
            source,
            "changed since its preflight check (sha256 differs)",
            "rerun the workflow so preflight checks the new file",
        )
    sr = settings.sample_rate
    hop = int(round(sr * FRAME_S))
    step = int(round(sr * STEP_S))
    manifest_path = dataset_dir / "voice_dataset_manifest.json"
    clips_dir = dataset_dir / "clips"
    hum = source_hum(source, marker) if settings.remove_hum else None
    with atomic_dir(clips_dir) as staging, scratch_spool(scratch_dir, voice) as spool:
        analysis = analyse_to_spool(source, spool, sr, threads, SpeechFilter(sr, settings.highpass_hz, hum))
        frame_db = analysis.frame_db
        speech = detect_speech(spool, analysis, settings, threads)
        if speech is None:
            active = frame_db > speech_threshold_db(frame_db, settings.segment.pause_threshold_db)
        else:
            active = speech
        voices = None
        if speakers is not None and speakers.enabled:
            voices = screen_voices(source, spool, analysis, active, speakers, sr)
        if voices is None:
            seg = segment_at_pauses(frame_db, FRAME_S, settings.segment, speech)
        else:
            seg = segment_at_pauses(frame_db, FRAME_S, settings.segment, voices.target, voices.other)
        contexts = tuple(int(round(s / FRAME_S)) for s in SNR_CONTEXTS_S)
        snrs = [span_snr_db(analysis.frame_power, active, c.start, c.end, contexts) for c in seg.clips]
        kept = [(c, snr) for c, snr in zip(seg.clips, snrs) if snr >= settings.min_snr_db]
        noisy = [c for c, snr in zip(seg.clips, snrs) if snr < settings.min_snr_db]
        if not kept:
            raise _no_usable_clips(source, seg.speech_frames * FRAME_S, snrs, settings)
        if warning := noisy_warning([c.frames for c, _ in kept], [c.frames for c in noisy], settings):
            logging.getLogger(CONSOLE_LOGGER).warning("prepare %s: %s", voice, warning)
            log.warning(warning)
        split = assign_splits(
            [(c.start * FRAME_S, c.end * FRAME_S) for c, _ in kept],
            settings.valid_fraction,
            settings.test_fraction,
            settings.split_seed,
            settings.split_guard_s,
        )
        guarded = [c for (c, _), name in zip(kept, split.splits) if name is None]
        kept, splits = zip(*[(k, name) for k, name in zip(kept, split.splits) if name is not None])
        for note in split.notes:
            logging.getLogger(CONSOLE_LOGGER).warning("prepare %s: %s", voice, note)
            log.warning(note)
        ids = [f"{voice}_{i:05d}" for i in range(len(kept))]

        def write_clip(clip_id: str, clip_snr: tuple[Clip, float], split: str) -> dict:
            clip, snr = clip_snr
            start, stop = clip.start * hop, min(clip.end * hop, analysis.samples)
            audio = read_spool(spool, start, stop)
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            gain_db = clip_gain_db(analysis.loudness_steps[start // step : stop // step], peak, settings)
            audio = audio * np.float32(10.0 ** (gain_db / 20.0))
            clip_file = staging / f"{clip_id}.flac"
            sf.write(str(clip_file), audio, sr, format="FLAC", subtype="PCM_16")
            info = {"description": description, "voice": voice, "split": split, "name": clip_id}
            (staging / f"{clip_id}.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            return {
                "source": str(source),
                "target": str(clips_dir / clip_file.name),
                "bytes": clip_file.stat().st_size,
                "sha256": sha256_file(clip_file),
                "offset_s": round(start / sr, 3),
                "duration_s": round((stop - start) / sr, 3),
                "sample_rate": sr,
                "split": split,
                "description": description,
                "gain_db": round(gain_db, 2),
                "speech_ratio": round(clip.speech_frames / max(1, clip.frames), 3),
                "snr_db": round(snr, 2),
                "speaker_similarity": None if voices is None else clip_similarity(voices, clip),
                "forced_cut": clip.forced_cut,
            }

        # FLAC encoding and hashing release the GIL, so clips are written side by side.
        pool = ThreadPoolExecutor(max_workers=max(1, threads))
        try:
            written = pool.map(write_clip, ids, kept, splits)
            entries = list(progress(written, total=len(ids), unit="clip", desc="write clips"))
        finally:
            pool.shutdown(cancel_futures=True)
    write_audiocraft_index(dataset_dir, entries)
    kept_snrs = [snr for _, snr in kept]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "mode": MANIFEST_MODE,
        "voice": voice,
        "description": description,
        "source": str(source),
        "source_sha256": marker["sha256"],
        "sample_rate": sr,
        "channels": 1,
        "entries": entries,
        "count": len(entries),
        "summary": {
            "source_duration_s": round(analysis.samples / sr, 3),
            "speech_duration_s": round(np.count_nonzero(active) * FRAME_S, 3),
            "kept_duration_s": round(sum(e["duration_s"] for e in entries), 3),
            "train": _split_summary(entries, "train"),
            "valid": _split_summary(entries, "valid"),
            "test": _split_summary(entries, "test"),
            "split_notes": split.notes,
            "forced_cuts": sum(e["forced_cut"] for e in entries),
            "dropped_short": _summary(seg.dropped_short, FRAME_S),
            "dropped_silent": _summary(seg.dropped_silent, FRAME_S),
            "dropped_noisy": _summary(noisy, FRAME_S),
            "dropped_guard": _summary(guarded, FRAME_S),
            "dropped_other_speakers": None if voices is None else _other_speakers(voices),
            "speakers": None if voices is None else _speakers_summary(voices, speakers),
            "snr_db": {"median": round(float(np.median(kept_snrs)), 2), "min": round(min(kept_snrs), 2)},
            "pause_detector": settings.pause_detector,
            "pause_threshold_dbfs": round(seg.threshold_db, 2) if speech is None else None,
            "highpass_hz": settings.highpass_hz,
            "hum": None if hum is None else {"mains_hz": hum.mains_hz, "harmonics": list(hum.harmonics)},
        },
        "settings": asdict(settings),
    }
    write_json_atomic(manifest_path, manifest)
    return manifest


def screen_voices(
    source: Path, spool: Path, analysis: Analysis, speech: np.ndarray, speakers: SpeakerSettings, rate: int
) -> SpeakerLabels:
    """Which speech frames are the target voice's (``speakers.screen_speakers`` over the spool):
    the dominant voice's, or that of the clip at ``speakers.reference``."""
    voice = reference_voice(Path(speakers.reference)) if speakers.reference else None
    read = lambda start, stop: read_spool(spool, start, min(stop, analysis.samples))  # noqa: E731
    return screen_speakers(read, rate, speech, speakers, source, voice)


def reference_voice(path: Path) -> np.ndarray:
    """The voice embedding of a reference clip, over the speech the voice activity detector
    finds in it; a missing, unreadable or speechless clip is refused naming the fix."""
    fix = "set speakers.reference to a clip (any format soundfile reads) of the voice to keep, or to null"
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, sf.LibsndfileError) as exc:
        raise VoiceTrainError(path, f"the speakers.reference clip cannot be read ({exc})", fix) from exc
    mono = downmix(audio)
    speech = clip_speech(mono, rate)
    if not speech.any():
        raise VoiceTrainError(path, "the speakers.reference clip holds no speech", fix)
    return embed_clip(mono, rate, speech)


def clip_similarity(voices: SpeakerLabels, clip: Clip) -> float | None:
    """Mean similarity of a clip's target speech to the target voice (None without any)."""
    values = voices.frame_similarity[clip.start : clip.end][voices.target[clip.start : clip.end]]
    return round(float(values.mean()), 3) if values.size else None


def _other_speakers(voices: SpeakerLabels) -> dict:
    """What screening left out: the other voices' turns (runs of their speech) and their seconds."""
    turns = speech_runs(voices.other, int(round(STRETCH_GAP_S / FRAME_S)))
    return {"count": len(turns), "duration_s": round(voices.other_s, 3)}


def _speakers_summary(voices: SpeakerLabels, speakers: SpeakerSettings) -> dict:
    return {
        "target": "reference" if speakers.reference else "dominant",
        "reference": speakers.reference,
        "target_share": round(voices.dominant_share, 3),
        "threshold": speakers.threshold,
        "target_speech_s": round(voices.target_s, 3),
        "other_speech_s": round(voices.other_s, 3),
    }


def source_hum(source: Path, marker: dict) -> Hum | None:
    """Mains hum in ``source``: what preflight found and wrote in its marker (``hum``), or, for a
    marker written before preflight looked for hum, found again the same way (``filters.find_hum``
    on the same excerpts)."""
    if "hum" in marker:
        found = marker["hum"]
        return None if found is None else Hum(**found | {"harmonics": tuple(found["harmonics"])})
    rate = sf.info(str(source)).samplerate
    return find_hum(read_excerpts(source, EXCERPT_S, EXCERPTS), rate)


def detect_speech(
    spool: Path, analysis: Analysis, settings: PrepareSettings, threads: int
) -> np.ndarray | None:
    """Which 10 ms frames hold speech by the voice activity detector (its probability at least
    ``settings.vad_threshold``), read from the spool; None with ``pause_detector: energy``."""
    if settings.pause_detector == "energy":
        return None
    windows = window_probabilities(
        lambda start, stop: read_spool(spool, start, min(stop, analysis.samples)),
        analysis.samples,
        settings.sample_rate,
        threads,
    )
    return frame_probabilities(windows, analysis.frame_power.size, FRAME_S) >= settings.vad_threshold


# Dropping more than this share of the clips' speech for noise is said on the console.
NOISY_WARN_SHARE = 0.5


def noisy_warning(kept_frames: list[int], noisy_frames: list[int], settings: PrepareSettings) -> str | None:
    """A line when most of the clips' speech was dropped as noisier than ``prepare.min_snr_db``
    (a recording that passed preflight's SNR check but sits near the clips' threshold)."""
    kept, dropped = sum(kept_frames), sum(noisy_frames)
    if not dropped or dropped <= NOISY_WARN_SHARE * (kept + dropped):
        return None
    share = dropped / (kept + dropped)
    return (
        f"{share:.0%} of the clips' speech ({dropped * FRAME_S:.1f} of {(kept + dropped) * FRAME_S:.1f} s, "
        f"{len(noisy_frames)} clips) was dropped as noisier than prepare.min_snr_db = "
        f"{settings.min_snr_db:g} dB; the dataset keeps {kept * FRAME_S:.1f} s. Use a cleaner recording, "
        "or lower prepare.min_snr_db to keep more of this one (each clip's snr_db is in the manifest)"
    )


def _no_usable_clips(source: Path, speech_s: float, snrs: list[float], settings: PrepareSettings):
    """The refusal when no clip is kept: too short everywhere, or too noisy everywhere."""
    if snrs:
        return VoiceTrainError(
            source,
            f"no usable clips: all {len(snrs)} clips are noisier than prepare.min_snr_db = "
            f"{settings.min_snr_db:g} dB (the best has an SNR of {max(snrs):.1f} dB)",
            "use a cleaner recording, or lower prepare.min_snr_db to train on this one anyway",
        )
    knob = (
        "lower prepare.vad_threshold"
        if settings.pause_detector == "vad"
        else "raise prepare.pause_threshold_db"
    )
    return VoiceTrainError(
        source,
        f"no usable clips: found {speech_s:.1f} s of speech but no stretch of "
        f"{settings.segment.min_clip_s:g}-{settings.segment.max_clip_s:g} s",
        f"check the recording, or lower prepare.min_clip_s / {knob}",
    )


def _split_summary(entries: list[dict], split: str) -> dict:
    chosen = [e for e in entries if e["split"] == split]
    return {"count": len(chosen), "duration_s": round(sum(e["duration_s"] for e in chosen), 3)}


def write_audiocraft_index(dataset_dir: Path, entries: list[dict]) -> None:
    """Write audiocraft-style ``data.jsonl`` (all clips) and ``{train,valid,test}/data.jsonl``.

    Each line is an ``AudioMeta`` record; the per-clip ``.json`` beside each clip carries
    the ``description`` that audiocraft's music dataset reads as the text condition.
    """

    def line(entry: dict) -> str:
        meta = {
            "path": entry["target"],
            "duration": entry["duration_s"],
            "sample_rate": entry["sample_rate"],
            "amplitude": None,
            "weight": None,
            "info_path": None,
        }
        return json.dumps(meta) + "\n"

    write_text_atomic(dataset_dir / "data.jsonl", "".join(line(e) for e in entries))
    for split in SPLITS:
        lines = "".join(line(e) for e in entries if e["split"] == split)
        write_text_atomic(dataset_dir / split / "data.jsonl", lines)
