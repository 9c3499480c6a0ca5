"""Split a recording into clips at pauses, from its frame levels and (optionally) voice activity.

The input is the level (dB) of consecutive short frames, and which frames hold speech: given
by a voice activity detector, or else found from the levels alone (frames above a threshold
derived from the recording's own speech level). The output is a list of clips in frame units.
Cuts are placed only inside pauses (runs of frames without speech), so no clip starts or ends
mid-word. Only when a stretch of continuous speech is longer than the maximum clip length is a
clip cut inside it, in a short pause the detector heard or else in its quietest half second, and
such clips are marked ``forced_cut``.
Frames marked as walls (another speaker's speech) are in no clip: clips end before them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve1d

# Forced cuts go in the middle of the quietest stretch this long: longer than a stop consonant's
# silence, so it is a pause between words. Measured under babble and a household mix at 5 and
# 10 dB (36 recordings of 3 min, 1160 cuts): a single quietest frame put 88-97% of the cuts in
# pauses, stretches of 0.4, 0.5, 0.6 and 0.7 s 99.0, 99.3, 98.8 and 99.1%. The stretch's level
# weights its frames by a triangle (``stretch_db``): on narrated speech (70 s espeak-ng
# recordings with mostly short pauses, seeds 5-13, clean, rooms, babble and household noise)
# that left 14 of 1318 edges in words where equal weights left 54 of 1332.
FORCED_CUT_STRETCH_S = 0.5
# A forced cut goes in the second half of its window (long clips) unless the first half has a
# stretch this much quieter: a pause there, where the second half holds only dips between
# syllables. Under babble (70 s espeak-ng recordings, seeds 5-10, clips of at most 8 s) it put
# 146 of 148 edges in pauses, against 144 (10 dB); at 5 dB 146 against 142; clean and household
# noise unchanged (every edge in a pause).
EARLIER_PAUSE_DB = 3.0
# A forced cut goes in a pause the detector heard, too short to end a clip by itself, when it is
# at least SHORT_PAUSE_S long (longer than a stop consonant's silence as the detector hears it:
# Silero scores 32 ms windows, and hears a 0.13 s breath between phrases as ~0.09 s) and
# SHORT_PAUSE_DB quieter than the quietest stretch. On the narrated speech above: 12 of 1320
# edges in words (clean: 2 of 212, was 4 of 214); with no margin 14 (household noise 8, was 2:
# under noise the detector also hears gaps inside words), with 10 dB 14.
SHORT_PAUSE_S = 0.06
SHORT_PAUSE_DB = 6.0


@dataclass(frozen=True)
class SegmentSettings:
    """Segmentation parameters (config section ``prepare``), in seconds and dB."""

    min_clip_s: float = 3.0
    max_clip_s: float = 15.0
    min_pause_s: float = 0.25
    max_inner_pause_s: float = 1.5
    pause_threshold_db: float = -35.0
    edge_pad_s: float = 0.15
    max_silence_ratio: float = 0.5


@dataclass(frozen=True)
class Clip:
    """A clip in frame units: frames ``[start, end)`` of the energy array."""

    start: int
    end: int
    speech_frames: int
    forced_cut: bool = False

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Segmentation:
    """The clips kept, and what was dropped and why, with the threshold used."""

    clips: list[Clip]
    threshold_db: float
    speech_frames: int
    dropped_short: list[Clip]
    dropped_silent: list[Clip]


def speech_threshold_db(frame_db: np.ndarray, relative_db: float) -> float:
    """Level below which a frame counts as pause.

    ``relative_db`` below the speech level (95th percentile), but at least 6 dB above the
    noise floor (10th percentile), so noisy recordings still show their pauses; and never
    within 10 dB of the speech level, for recordings that are nearly all speech.
    """
    if frame_db.size == 0:
        return 0.0
    speech_level, floor = (float(v) for v in np.percentile(frame_db, [95, 10]))
    return max(speech_level + relative_db, min(floor + 6.0, speech_level - 10.0))


def speech_runs(active: np.ndarray, min_gap: int, walls: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Runs ``[start, end)`` of active frames, merging runs separated by fewer than ``min_gap`` frames
    (but never across a frame of ``walls``)."""
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    runs = [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        joins = bool(merged) and start - merged[-1][1] < min_gap
        if joins and walls is not None:
            joins = not walls[merged[-1][1] : start].any()
        if joins:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def stretch_db(frame_db: np.ndarray, width: int) -> np.ndarray:
    """Level (dB) of the ``width`` frames centred on each frame: the mean of their powers,
    weighted by a triangle that peaks on that frame.

    The triangle makes the quietest stretch's middle the quietest point itself: with equal
    weights a short pause between a soft word and a loud one had its quietest stretch centred
    on the soft word's end.
    """
    power = 10.0 ** (np.asarray(frame_db, dtype=np.float64) / 10.0)
    if width > 1 and power.size:
        weights = np.bartlett(width + 2)[1:-1]
        power = convolve1d(power, weights / weights.sum(), mode="nearest")
    return 10.0 * np.log10(np.maximum(power, 1e-30))


def short_pause_db(frame_db: np.ndarray, active: np.ndarray, min_frames: int) -> np.ndarray:
    """For the middle frame of each run of at least ``min_frames`` inactive frames (a pause,
    however short), the level (dB) of that whole run; ``inf`` for every other frame."""
    out = np.full(frame_db.size, np.inf)
    power = 10.0 ** (np.asarray(frame_db, dtype=np.float64) / 10.0)
    for start, end in speech_runs(~np.asarray(active, dtype=bool), 1):
        if end - start >= min_frames:
            out[(start + end) // 2] = 10.0 * np.log10(max(float(power[start:end].mean()), 1e-30))
    return out


def _split_long_run(
    quiet_db: np.ndarray, pause_db: np.ndarray, start: int, end: int, min_len: int, max_len: int
) -> list[int]:
    """Cut points inside one run of continuous speech longer than ``max_len`` frames.

    Each cut is the middle of the quietest stretch (``quiet_db``: the level of the stretch
    around each frame) in the second half of the admissible window, which keeps clips long
    while landing in the deepest pause there, or in the first half when a stretch there is
    ``EARLIER_PAUSE_DB`` quieter still. A stretch, not a frame: a word's stop consonant is as
    quiet as a pause for a frame or two, but a pause is longer. But where the detector heard a
    pause too short to end a clip (``pause_db``: its level, at its middle frame) that is
    ``SHORT_PAUSE_DB`` quieter than that stretch, the cut goes in the middle of the quietest
    such pause (second half first): a short breath between phrases, where the quietest stretch
    can lie on a soft word's end.
    """
    cuts = []
    pos = start
    while end - pos > max_len:
        lo = pos + max(min_len, max_len // 2)
        hi = min(pos + max_len, end - min_len)
        if hi <= lo:
            hi = pos + max_len
            lo = min(lo, hi - 1)
        cut = lo + int(np.argmin(quiet_db[lo:hi]))
        first = pos + min_len
        if first < lo:
            earlier = first + int(np.argmin(quiet_db[first:lo]))
            if quiet_db[earlier] < quiet_db[cut] - EARLIER_PAUSE_DB:
                cut = earlier
        for a, b in ((lo, hi), (first, lo)):
            pause = a + int(np.argmin(pause_db[a:b])) if b > a else None
            if pause is not None and pause_db[pause] <= quiet_db[cut] - SHORT_PAUSE_DB:
                cut = pause
                break
        cuts.append(cut)
        pos = cut
    return cuts


class _Pieces:
    """Speech pieces ``[start, end)`` in order, with the padded bounds of any span of them.

    ``walls`` (sorted frame indices) are frames no clip may include: the gap beside a piece
    ends at the nearest wall frame.
    """

    def __init__(self, pieces: list[tuple[int, int]], n_frames: int, pad: int, walls: np.ndarray) -> None:
        self.starts = [a for a, _ in pieces]
        self.ends = [b for _, b in pieces]
        self.n_frames = n_frames
        self.pad = pad
        self.walls = walls

    def gap_before(self, i: int) -> int:
        edge = self.ends[i - 1] if i > 0 else 0
        k = int(np.searchsorted(self.walls, self.starts[i])) - 1
        if k >= 0 and self.walls[k] >= edge:
            edge = int(self.walls[k]) + 1
        return self.starts[i] - edge

    def gap_after(self, j: int) -> int:
        nxt = self.starts[j + 1] if j + 1 < len(self.starts) else self.n_frames
        k = int(np.searchsorted(self.walls, self.ends[j]))
        if k < self.walls.size:
            nxt = min(nxt, int(self.walls[k]))
        return nxt - self.ends[j]

    def walled(self, i: int) -> bool:
        """True when a wall lies between piece ``i - 1`` and piece ``i``."""
        k = int(np.searchsorted(self.walls, self.ends[i - 1]))
        return k < self.walls.size and self.walls[k] < self.starts[i]

    def bounds(self, i: int, j: int) -> tuple[int, int]:
        """Frames of a clip spanning pieces i..j, padded by up to half the pause on each side."""
        left = self.starts[i] - min(self.pad, self.gap_before(i) // 2)
        right = self.ends[j] + min(self.pad, self.gap_after(j) // 2)
        return left, right

    def length(self, i: int, j: int) -> int:
        left, right = self.bounds(i, j)
        return right - left


def _cut_score(pieces: _Pieces, i: int, j: int, max_len: int) -> float:
    """How good it is to end a clip that starts at piece i after piece j.

    Rewards a long pause after j (up to two pads: a likely phrase or sentence boundary)
    and a long clip, each on a 0-1 scale.
    """
    full_pause = 2 * pieces.pad
    return min(pieces.gap_after(j), full_pause) / full_pause + pieces.length(i, j) / max_len


def _partition_group(
    pieces: _Pieces, first: int, last: int, min_len: int, max_len: int
) -> list[tuple[int, int]]:
    """Partition pieces ``first..last`` (no long pause inside) into clips ``(i, j)``.

    Greedy from the left: among the admissible ends (clip length within the limits), take
    the one that best combines a long pause after it (a phrase or sentence boundary) with
    a long clip, avoiding a remainder too short to be a clip when possible. A piece that
    cannot form an admissible clip is returned on its own (the caller drops it as short).
    """
    spans = []
    i = first
    while i <= last:
        ends = []
        for j in range(i, last + 1):
            length = pieces.length(i, j)
            if length > max_len:
                break
            if length >= min_len:
                ends.append(j)
        if not ends:
            j = last if pieces.length(i, last) < min_len else i
        elif ends[-1] == last:
            j = last
        else:
            pool = [j for j in ends if pieces.length(j + 1, last) >= min_len] or ends
            j = max(pool, key=lambda end, start=i: _cut_score(pieces, start, end, max_len))
        spans.append((i, j))
        i = j + 1
    return spans


def segment_at_pauses(
    frame_db: np.ndarray,
    frame_s: float,
    settings: SegmentSettings,
    speech: np.ndarray | None = None,
    walls: np.ndarray | None = None,
) -> Segmentation:
    """Segment a recording, given the level of each ``frame_s``-long frame in dB.

    ``speech`` (one bool per frame, from a voice activity detector) says which frames hold
    speech; without it, frames above ``speech_threshold_db`` do. Returns clips whose lengths
    lie within ``[min_clip_s, max_clip_s]``, whose boundaries fall in pauses (or, for over-long
    continuous speech, in its quietest stretch), and which never span a pause longer than
    ``max_inner_pause_s``. Speech too short to make a clip on its own and clips that are
    mostly silence are reported as dropped. ``walls`` (one bool per frame, e.g. another
    speaker's speech) are frames no clip includes: they split the recording like long pauses.
    """
    frame_db = np.asarray(frame_db, dtype=np.float64)

    def to_frames(seconds: float) -> int:
        return max(1, int(round(seconds / frame_s)))

    min_len, max_len = to_frames(settings.min_clip_s), to_frames(settings.max_clip_s)
    pad = to_frames(settings.edge_pad_s)
    threshold = speech_threshold_db(frame_db, settings.pause_threshold_db)
    active = frame_db > threshold if speech is None else np.asarray(speech, dtype=bool)

    # Continuous speech longer than a clip is cut at its quietest frames first; the pieces
    # on either side of such a cut touch (zero gap), which is how forced cuts are recognised.
    pieces: list[tuple[int, int]] = []
    quiet_db = stretch_db(frame_db, to_frames(FORCED_CUT_STRETCH_S))
    walls = None if walls is None else np.asarray(walls, dtype=bool)
    pause_db = short_pause_db(frame_db, active, to_frames(SHORT_PAUSE_S))
    for start, end in speech_runs(active, to_frames(settings.min_pause_s), walls):
        edges = [start, *_split_long_run(quiet_db, pause_db, start, end, min_len, max_len - 2 * pad), end]
        pieces.extend(zip(edges[:-1], edges[1:]))
    wall_frames = np.flatnonzero(walls) if walls is not None else np.zeros(0, dtype=np.int64)
    table = _Pieces(pieces, frame_db.size, pad, wall_frames)

    # Long pauses and walls are hard boundaries: clips never span them.
    long_pause = to_frames(settings.max_inner_pause_s)
    group_starts = [0] + [
        i for i in range(1, len(pieces)) if table.gap_before(i) >= long_pause or table.walled(i)
    ]
    group_ends = [g - 1 for g in group_starts[1:]] + [len(pieces) - 1]

    kept, short, silent = [], [], []
    for first, last in zip(group_starts, group_ends):
        for i, j in _partition_group(table, first, last, min_len, max_len):
            start, end = table.bounds(i, j)
            forced = (i > 0 and table.gap_before(i) == 0) or (j + 1 < len(pieces) and table.gap_after(j) == 0)
            clip = Clip(start, end, int(np.count_nonzero(active[start:end])), forced)
            if clip.frames < min_len:
                short.append(clip)
            elif 1.0 - clip.speech_frames / clip.frames > settings.max_silence_ratio:
                silent.append(clip)
            else:
                kept.append(clip)
    return Segmentation(kept, threshold, int(np.count_nonzero(active)), short, silent)
