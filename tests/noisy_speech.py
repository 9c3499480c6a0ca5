"""Speech recorded as people record it (noise, rooms, hum), with the clean truth beside it.

The tests and ``bench/noise_bench.py`` build their material here; nothing is downloaded.

* **Clean speech**: utterances of a few words spoken by espeak-ng (several voices, speaking
  rates and pitches; one process per utterance), laid end to end with pauses of known length,
  or the demo's synthetic voice (``voice_train.demo.synthesize_voice``), whose word positions
  are known. Either way the ground truth is a list of speech spans: a cut inside one of them
  is a cut inside words. An espeak utterance is one span from its first audible 10 ms to its
  last (within 50 dB of its loudest), so a cut anywhere inside it counts as inside a word, even
  where espeak left a short gap.
* **Noise** of several kinds, mixed at a set SNR (the clean speech's power over its spans
  against the noise's mean power, both above 70 Hz): mains hum with harmonics and hiss, pink and brown noise,
  babble (other espeak voices talking at once), clattering transients, and a "household" mix
  of them.
* **Rooms**: the clean speech convolved with a room impulse response simulated by
  pyroomacoustics (image source method, shoebox room), with the measured RT60 reported. The
  truth is shifted by the direct path's delay, so it stays where the speech now is.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import soxr
from scipy.fft import next_fast_len
from scipy.signal import butter, fftconvolve, sosfilt

ESPEAK_RATE = 22050
ESPEAK_FIX = "pip install -r requirements-dev.txt (make test does it)"

# Voices, rates (words per minute) and pitches (0-99) of the talkers; '+fN'/'+mN' are espeak's
# variants: each its own formants and breathiness.
VOICES = ("en-us+m3", "en-gb+f2", "en+m7", "en-us+f4", "en-gb-x-rp+m1", "en+f3", "en-us+klatt", "en+m5")
SENTENCES = (
    "The kettle was already singing when she came down the stairs",
    "We walked along the river until the light began to fade",
    "My grandfather kept his tools in a wooden box under the bench",
    "Nobody remembered who had planted the old pear tree",
    "The train to the coast left every morning at half past seven",
    "She folded the letter twice and put it in her apron pocket",
    "In winter the whole village smelled of wood smoke and apples",
    "He never once missed the football results on a Saturday",
    "The bakery on the corner sold bread still warm from the oven",
    "Every summer we drove north to stay with our cousins",
    "The radio played quietly in the kitchen all afternoon",
    "Mother said the best stories are the ones you almost forget",
    "There was a dance at the town hall on the first Friday of the month",
    "Rain drummed on the tin roof of the garden shed",
    "I learned to ride a bicycle on the lane behind the church",
    "The postman knew every dog on the street by name",
    "We used to pick blackberries along the railway embankment",
    "The school bell was rung by hand by the oldest boy",
    "Father mended the fence again after the storm",
    "The market was busiest just before the harvest festival",
    "She could knit a whole jumper in a single week",
    "On clear nights you could see the lighthouse from our window",
    "The ferry crossing took longer when the wind was from the west",
    "Our neighbour grew the largest marrows in the county",
    "The cinema showed two films for the price of one on Tuesdays",
    "We kept chickens in the yard and sold the eggs at the gate",
    "The snow that year came up to the kitchen window sill",
    "He wrote to her every week for three years",
    "The old mill was turned into a museum long ago",
    "Sunday lunch was always roast chicken with too many potatoes",
    "The bus driver would wait if he saw you running",
    "I still have the little brass bell from her bicycle",
    "The orchard flooded the spring the river burst its banks",
    "Everyone in the street came out to watch the eclipse",
    "We listened to the wireless in the dark during the power cuts",
    "Her handwriting was small and neat and slanted to the right",
    "The shop sold everything from nails to birthday cards",
    "They were married in the little chapel by the harbour",
    "The hens stopped laying whenever a fox came near",
    "My brother once caught a trout with his bare hands",
    "The swings in the park squeaked no matter how much oil we used",
    "Uncle Albert played the piano at every family wedding",
    "We counted the seconds between the lightning and the thunder",
    "The tide came in so fast that we had to run for the rocks",
    "There were always sweets in the drawer of the hall table",
    "The road to the farm was nothing but mud in March",
    "She kept every birthday card she was ever sent",
    "The church clock was always exactly four minutes slow",
)


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Speech:
    """Mono audio and the spans (seconds) inside which no clip may start or end."""

    audio: np.ndarray  # float32 (frames,)
    sample_rate: int
    spans: list[tuple[float, float]]

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate

    def active_mask(self) -> np.ndarray:
        """True for every sample inside a speech span."""
        mask = np.zeros(self.audio.size, dtype=bool)
        for start, end in self.spans:
            mask[int(start * self.sample_rate) : int(end * self.sample_rate)] = True
        return mask


@dataclass(frozen=True)
class Material:
    """A degraded recording, its clean copy and the truth, under one named condition."""

    name: str
    audio: np.ndarray  # float32 (frames,): what the workflow gets
    clean: Speech  # the clean speech, aligned with ``audio``
    snr_db: float | None  # the SNR it was mixed at (None: no added noise)
    facts: dict = field(default_factory=dict)  # e.g. the room's measured RT60

    @property
    def sample_rate(self) -> int:
        return self.clean.sample_rate


SAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_say.py")


@functools.cache
def require_espeak() -> tuple[str, str]:
    """libespeak-ng and its data (from the ``espeakng-loader`` wheel); ``EspeakMissing`` names the fix."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EspeakMissing(f"the espeakng-loader wheel is not installed: {ESPEAK_FIX}") from exc
    return espeakng_loader.get_library_path(), os.path.dirname(espeakng_loader.get_data_path())


def _espeak_many(jobs: list[tuple[str, str, int, int]], side_by_side: int = 8) -> list[np.ndarray]:
    """Speak each (text, voice, rate, pitch) at ``ESPEAK_RATE``: each utterance in a new process of
    ``tests/espeak_say.py`` (libespeak-ng is deterministic only so), several side by side."""
    library, data = require_espeak()
    out = []
    for first in range(0, len(jobs), side_by_side):
        batch = jobs[first : first + side_by_side]
        procs = [
            subprocess.Popen(
                [sys.executable, "-S", "-E", SAY, library, data, voice, str(rate), str(pitch), text],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for text, voice, rate, pitch in batch
        ]
        for proc, job in zip(procs, batch):
            samples, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"libespeak-ng failed on {job}: {err.decode(errors='replace')}")
            out.append(_trim(np.frombuffer(samples, dtype=np.int16).astype(np.float32) / 32768.0))
    return out


def _trim(audio: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """The utterance from its first to its last sample above ``floor`` of its peak."""
    loud = np.flatnonzero(np.abs(audio) > floor * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


def _audible_s(audio: np.ndarray, sample_rate: int, below_db: float = 50.0) -> tuple[float, float]:
    """Where an utterance is heard (seconds from its start): from its first to the end of its last
    10 ms frame within ``below_db`` of its loudest. espeak-ng's last sound can fade for 0.1 s at
    50-80 dB below the utterance's peak (seen as samples above ``_trim``'s floor): silence to a
    listener, and a pause, not a word, to any cut placed there."""
    from voice_train.audio import frame_power

    frame = max(1, sample_rate // 100)
    power = frame_power(audio, frame)
    if power.size == 0:
        return 0.0, audio.size / sample_rate
    loud = np.flatnonzero(power >= power.max() * 10 ** (-below_db / 10))
    return loud[0] * frame / sample_rate, min(audio.size, (loud[-1] + 1) * frame) / sample_rate


def _pause_s(rng: np.random.Generator, style: str = "read") -> float:
    """A pause between utterances. ``read``: as in read speech, short hesitations and phrase
    pauses, sentence pauses, now and then a long one (a breath, a page turned). ``narration``:
    as a person tells a story, mostly short breaths between phrases, rarely a long pause."""
    kind = rng.random()
    if style == "narration":
        if kind < 0.5:
            return float(rng.uniform(0.12, 0.25))
        if kind < 0.85:
            return float(rng.uniform(0.25, 0.5))
        return float(rng.uniform(0.5, 0.9))
    if kind < 0.25:
        return float(rng.uniform(0.12, 0.3))
    if kind < 0.6:
        return float(rng.uniform(0.3, 0.7))
    if kind < 0.9:
        return float(rng.uniform(0.7, 1.4))
    return float(rng.uniform(1.6, 2.6))


def espeak_speech(
    duration_s: float, sample_rate: int, seed: int = 0, voices=VOICES[:4], pauses: str = "read"
) -> Speech:
    """About ``duration_s`` of espeak-ng utterances (phrases of 3-8 words) with known pauses.

    Each utterance gets a voice from ``voices``, a rate of 130-190 words per minute and a pitch
    of 30-70, at a level that varies by up to 6 dB. ``pauses`` is the style of the pauses
    between them (``_pause_s``). Returns at least ``duration_s`` seconds.
    """
    rng = np.random.default_rng(seed)
    words = [w for s in SENTENCES for w in s.split()]
    pieces, spans, pos = [np.zeros(int(0.5 * sample_rate), np.float32)], [], 0.5
    while pos < duration_s:
        jobs, gaps = [], []
        for _ in range(max(1, int((duration_s - pos) / 2.5))):  # ~2.5 s per utterance and pause
            n = int(rng.integers(3, 9))
            start = int(rng.integers(0, len(words) - n))
            voice = voices[int(rng.integers(0, len(voices)))]
            text = " ".join(words[start : start + n])
            jobs.append((text, voice, int(rng.integers(130, 191)), int(rng.integers(30, 71))))
            gaps.append(_pause_s(rng, pauses))
        for audio, pause in zip(_espeak_many(jobs), gaps):
            audio = soxr.resample(audio, ESPEAK_RATE, sample_rate, quality="HQ").astype(np.float32)
            audio *= np.float32(0.5 * 10 ** (-rng.uniform(0, 6) / 20) / np.abs(audio).max())
            first, last = _audible_s(audio, sample_rate)
            spans.append((pos + first, pos + last))
            pieces += [audio, np.zeros(int(round(pause * sample_rate)), np.float32)]
            pos += (audio.size + pieces[-1].size) / sample_rate
    return Speech(np.concatenate(pieces), sample_rate, spans)


@dataclass(frozen=True)
class Interview:
    """One target voice with short turns by others: the mix, and who speaks when."""

    speech: Speech  # the mix; its spans are every utterance, whoever speaks it
    target_spans: list[tuple[float, float]]
    other_spans: list[tuple[float, float]]


def interview(
    duration_s: float,
    sample_rate: int,
    seed: int = 0,
    target: str = "en-us+m3",
    others: tuple[str, ...] = ("de+f4", "it+m7"),
    other_share: float = 0.15,
) -> Interview:
    """About ``duration_s`` of an interview: ``target`` talks on in utterances of 3-8 words with
    natural pauses; now and then one of ``others`` takes a turn of 2-4 s, with a gap of 0.5-1 s
    before and after it, so that about ``other_share`` of the speech is theirs.

    The target's pitch varies a little (40-60) as a person's does; each other voice keeps its own.
    The default voices are ones the speaker encoder tells apart from the target (window
    similarity to the target's voice at most ~0.73, the target's own at least ~0.81); some
    espeak-ng variants it hardly tells apart (en-gb+f2, de+m1, es+m5, fr+m2: 0.73-0.86).
    """
    rng = np.random.default_rng(seed)
    words = [w for s in SENTENCES for w in s.split()]
    plan: list[tuple[bool, float]] = []  # (is a turn by another voice, the pause after it)
    jobs, spoken, theirs = [], 0.0, 0.0
    while spoken < duration_s:
        other = theirs < other_share * max(spoken, 1.0) and bool(plan) and not plan[-1][0]
        if other:
            n = int(rng.integers(8, 14))  # 2-4 s: espeak-ng speaks faster than its words per minute
            voice, rate, pitch = others[int(rng.integers(0, len(others)))], int(rng.integers(160, 181)), 50
            theirs += n * 60 / rate
        else:
            n = int(rng.integers(3, 9))
            voice, rate, pitch = target, int(rng.integers(140, 181)), int(rng.integers(40, 61))
        start = int(rng.integers(0, len(words) - n))
        jobs.append((" ".join(words[start : start + n]), voice, rate, pitch))
        pause = float(rng.uniform(0.5, 1.0)) if other else _pause_s(rng)
        if other:  # the gap before their turn, too
            plan[-1] = (False, float(rng.uniform(0.5, 1.0)))
        plan.append((other, pause))
        spoken += n * 60 / rate + pause
    pieces, spans, target_spans, other_spans, pos = [np.zeros(sample_rate // 2, np.float32)], [], [], [], 0.5
    for audio, (other, pause) in zip(_espeak_many(jobs), plan):
        audio = soxr.resample(audio, ESPEAK_RATE, sample_rate, quality="HQ").astype(np.float32)
        audio *= np.float32(0.5 * 10 ** (-rng.uniform(0, 6) / 20) / np.abs(audio).max())
        span = (pos, pos + audio.size / sample_rate)
        spans.append(span)
        (other_spans if other else target_spans).append(span)
        pieces += [audio, np.zeros(int(round(pause * sample_rate)), np.float32)]
        pos = span[1] + pieces[-1].size / sample_rate
    return Interview(Speech(np.concatenate(pieces), sample_rate, spans), target_spans, other_spans)


def dialogue(
    duration_s: float, sample_rate: int, seed: int = 0, voices: tuple[str, str] = ("en-us+m3", "de+f4")
):
    """About ``duration_s`` of two voices taking turns of 3-8 words at 0.5-1 s gaps, each with
    about half the speech (no voice dominates); ``target_spans`` are the first voice's."""
    rng = np.random.default_rng(seed)
    words = [w for s in SENTENCES for w in s.split()]
    jobs = []
    for turn in range(max(2, int(duration_s / 2.8))):  # ~2.8 s per turn and gap
        n = int(rng.integers(3, 9))
        start = int(rng.integers(0, len(words) - n))
        jobs.append((" ".join(words[start : start + n]), voices[turn % 2], int(rng.integers(150, 181)), 50))
    pieces, spans, pos = [np.zeros(sample_rate // 2, np.float32)], [], 0.5
    for audio in _espeak_many(jobs):
        audio = soxr.resample(audio, ESPEAK_RATE, sample_rate, quality="HQ").astype(np.float32)
        audio *= np.float32(0.5 / np.abs(audio).max())
        spans.append((pos, pos + audio.size / sample_rate))
        pieces += [audio, np.zeros(int(round(rng.uniform(0.5, 1.0) * sample_rate)), np.float32)]
        pos = spans[-1][1] + pieces[-1].size / sample_rate
    return Interview(Speech(np.concatenate(pieces), sample_rate, spans), spans[::2], spans[1::2])


def demo_speech(duration_s: float, sample_rate: int, seed: int = 0) -> Speech:
    """The demo's synthetic voice, mono; its words are the spans."""
    from voice_train.demo import synthesize_voice

    voice = synthesize_voice(duration_s=duration_s, sample_rate=sample_rate, channels=1, seed=seed)
    return Speech(voice.audio[:, 0].copy(), sample_rate, list(voice.speech_intervals))


# --- noise ------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit mean power, as float32."""
    return (x / np.sqrt(np.mean(np.square(x, dtype=np.float64)))).astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), unit power."""
    size = next_fast_len(n)  # an FFT of a length with a large prime factor takes seconds
    spectrum = np.fft.rfft(rng.standard_normal(size))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= f ** (exponent / 2)
    spectrum[0] = 0.0
    return _unit(np.fft.irfft(spectrum, size)[:n])


def hum_and_hiss(n: int, sample_rate: int, rng: np.random.Generator, mains_hz: float = 50.0) -> np.ndarray:
    """Mains hum (fundamental and odd and even harmonics, slowly wavering) over white hiss."""
    t = np.arange(n) / sample_rate
    # The grid's frequency wanders by ~0.05 Hz over tens of seconds.
    frequency = mains_hz * (1 + 0.001 * np.sin(2 * np.pi * 0.03 * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    hum = np.zeros(n)
    for k, level_db in zip(range(1, 8), (0, -6, -4, -12, -10, -18, -16)):
        hum += 10 ** (level_db / 20) * np.sin(k * phase + rng.uniform(0, 6.3))
    return _unit(_unit(hum) + 0.5 * rng.standard_normal(n))


def clatter(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Kitchen clatter: random knocks and clinks (decaying resonances), ~1.5 a second, on faint noise."""
    out = 0.02 * rng.standard_normal(n)
    for onset in np.cumsum(rng.exponential(1 / 1.5, int(n / sample_rate * 3) + 4)):
        start = int(onset * sample_rate)
        if start >= n:
            break
        length = min(n - start, int(rng.uniform(0.05, 0.4) * sample_rate))
        t = np.arange(length) / sample_rate
        freq = rng.uniform(300, 5000)
        knock = np.sin(2 * np.pi * freq * t) * np.exp(-t * rng.uniform(15, 60))
        knock += 0.5 * rng.standard_normal(length) * np.exp(-t * 200)
        out[start : start + length] += rng.uniform(0.3, 1.0) * knock
    return _unit(out)


@functools.lru_cache(maxsize=4)
def _talkers(sample_rate: int, talkers: int) -> tuple[np.ndarray, ...]:
    """Each background talker reading on (~45 s each), made once per process and rate."""
    jobs = []
    for talker in range(talkers):
        order = np.random.default_rng(100 + talker).permutation(len(SENTENCES))
        text = ". ".join(SENTENCES[i] for i in order[:14])
        voice = VOICES[4 + talker % (len(VOICES) - 4)]
        jobs.append((text, voice, 150 + 12 * talker, 30 + 11 * talker))
    return tuple(
        _unit(soxr.resample(audio, ESPEAK_RATE, sample_rate, quality="HQ")) for audio in _espeak_many(jobs)
    )


def babble(n: int, sample_rate: int, rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Other people talking at once: ``talkers`` espeak voices reading on without pauses, each
    from its own random point (voices other than the near talker's)."""
    out = np.zeros(n, np.float64)
    for track in _talkers(sample_rate, talkers):
        looped = np.tile(track, int(np.ceil(n / track.size)) + 1)
        start = int(rng.integers(0, track.size))
        out += looped[start : start + n]
    return _unit(out)


def household(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room in a home: pink noise, a television's babble, clatter and a little hum, equal power."""
    parts = (
        coloured_noise(n, rng, 1.0),
        babble(n, sample_rate, rng),
        clatter(n, sample_rate, rng),
        0.3 * hum_and_hiss(n, sample_rate, rng, mains_hz=60.0),
    )
    return _unit(sum(parts))


NOISES = {
    "hum_hiss": lambda n, sr, rng: hum_and_hiss(n, sr, rng, mains_hz=50.0),
    "pink": lambda n, sr, rng: coloured_noise(n, rng, 1.0),
    "brown": lambda n, sr, rng: coloured_noise(n, rng, 2.0),
    "babble": babble,
    "clatter": clatter,
    "household": household,
}


def voice_band(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` above 70 Hz (where the voice is, and what the workflow keeps), float64."""
    sos = butter(4, 70.0, btype="highpass", fs=sample_rate, output="sos")
    return sosfilt(sos, audio.astype(np.float64))


def mix_at_snr(speech: Speech, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` at ``snr_db``: speech power over its spans against the noise's
    mean power, both in the voice band (above 70 Hz). Rumble below it, which any high-pass
    takes out, does not count: brown noise at 10 dB is then as hard as pink at 10 dB."""
    active = speech.active_mask()
    speech_power = float(np.mean(np.square(voice_band(speech.audio, speech.sample_rate)[active])))
    noise_power = float(np.mean(np.square(voice_band(noise, speech.sample_rate))))
    gain = np.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))
    return (speech.audio + gain * noise).astype(np.float32)


def with_burst(speech: Speech, start_s: float, end_s: float, snr_db: float, seed: int = 0) -> np.ndarray:
    """``speech`` clean but for pink noise from ``start_s`` to ``end_s`` (a vacuum cleaner, a
    passing lorry), at ``snr_db`` against the speech's power (in the voice band, as
    :func:`mix_at_snr`), faded in and out over 0.1 s."""
    sr = speech.sample_rate
    a, b, ramp = int(start_s * sr), int(end_s * sr), int(0.1 * sr)
    envelope = np.zeros(speech.audio.size)
    envelope[a:b] = 1.0
    envelope[a : a + ramp] = np.linspace(0.0, 1.0, ramp)
    envelope[b - ramp : b] = np.linspace(1.0, 0.0, ramp)
    noise = coloured_noise(speech.audio.size, np.random.default_rng(seed + 2000), 1.0)
    active = speech.active_mask()
    speech_power = float(np.mean(np.square(voice_band(speech.audio, sr)[active])))
    noise_power = float(np.mean(np.square(voice_band(noise, sr)[a:b])))
    gain = np.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))
    return (speech.audio + gain * envelope * noise).astype(np.float32)


# --- rooms ------------------------------------------------------------------------------------


def room_impulse_response(rt60_s: float, sample_rate: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """A simulated room's impulse response (direct path first) and its measured RT60 in seconds.

    A living-room-sized shoebox (6 x 4.5 x 2.8 m), talker and microphone 2.8 m apart. Sabine's
    formula overestimates the decay of a shoebox's image sources by ~1.45x, so the wall
    absorption is set for ``rt60_s / 1.45``; the RT60 actually measured on the response is
    returned with it.
    """
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    dim = [6.0, 4.5, 2.8]
    absorption, max_order = pra.inverse_sabine(rt60_s / 1.45, dim)
    room = pra.ShoeBox(
        dim, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order, air_absorption=False
    )
    room.add_source([1.4 + rng.uniform(-0.2, 0.2), 2.0 + rng.uniform(-0.2, 0.2), 1.6])
    room.add_microphone([4.1, 2.7, 1.1])
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))) :]  # start at the direct path: the truth stays aligned
    return rir / np.abs(rir[0]), float(pra.experimental.measure_rt60(rir, fs=sample_rate))


def in_room(speech: Speech, rt60_s: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """``speech`` as heard across the room, at the same level (power over the spans); the RT60."""
    rir, measured = room_impulse_response(rt60_s, speech.sample_rate, seed)
    wet = fftconvolve(speech.audio.astype(np.float64), rir)[: speech.audio.size]
    active = speech.active_mask()
    wet *= np.sqrt(np.mean(np.square(speech.audio[active], dtype=np.float64)) / np.mean(wet[active] ** 2))
    return wet.astype(np.float32), measured


# --- conditions -------------------------------------------------------------------------------


def condition(name: str, speech: Speech, seed: int = 0) -> Material:
    """``speech`` under the named condition.

    Names: ``clean``; ``<noise>_<snr>db`` with a noise of ``NOISES`` (``pink_10db``,
    ``babble_5db``, ...); ``room_<rt60>s`` (a reverberant room, plus pink noise 30 dB down, as
    any room has); ``room_<rt60>s_<noise>_<snr>db`` (both).
    """
    rng = np.random.default_rng(seed + 1000)
    sr, n = speech.sample_rate, speech.audio.size
    if name == "clean":
        return Material(name, speech.audio, speech, None)
    facts: dict = {}
    audio, noise_name, snr_db = speech.audio, None, None
    rest = name
    if rest.startswith("room_"):
        rt60 = float(rest.split("_")[1].removesuffix("s"))
        wet, facts["rt60_measured_s"] = in_room(speech, rt60, seed)
        audio = wet
        rest = "_".join(rest.split("_")[2:]) or "pink_30db"
    noise_name, _, snr = rest.rpartition("_")
    snr_db = float(snr.removesuffix("db"))
    noisy = Speech(audio, sr, speech.spans)
    mixed = mix_at_snr(noisy, NOISES[noise_name](n, sr, rng), snr_db)
    # A recorder's gain keeps loud rumble from clipping: the peak at -1 dBFS at most.
    mixed *= np.float32(min(1.0, 10 ** (-1 / 20) / np.abs(mixed).max()))
    return Material(name, mixed, speech, snr_db, facts)


# --- scoring ----------------------------------------------------------------------------------


def cuts_in_pauses(clips_s: list[tuple[float, float]], spans: list[tuple[float, float]], tol_s: float = 0.02):
    """How many clip edges (starts and ends) fall outside every speech span, and how many edges.

    An edge within ``tol_s`` of a span's start or end counts as outside it (a word's first or
    last few milliseconds are inaudible under any noise).
    """
    starts = np.array([s for s, _ in spans]) + tol_s
    ends = np.array([e for _, e in spans]) - tol_s
    edges = [t for clip in clips_s for t in clip]
    inside = sum(bool(np.any((starts < t) & (t < ends))) for t in edges)
    return len(edges) - inside, len(edges)


def speech_kept_s(clips_s: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float:
    """Seconds of the spans that lie inside kept clips."""
    total = 0.0
    for a, b in spans:
        for s, e in clips_s:
            total += max(0.0, min(b, e) - max(a, s))
    return total
