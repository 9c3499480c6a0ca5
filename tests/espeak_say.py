"""Speak one utterance with libespeak-ng and write its 16-bit samples (22050 Hz) to stdout.

    python -S -E tests/espeak_say.py LIBRARY DATA_PARENT VOICE RATE PITCH TEXT

``tests/noisy_speech.py`` runs this once per utterance, as the ``espeak-ng`` program would be run:
libespeak-ng 1.52 (the ``espeakng-loader`` wheel) does not give the same samples twice in one
process, nor in a fork of one that has run for a while (it keeps state it does not reset), and
it seeds its random generator (breath, jitter) from the clock when it starts; a new process with
a fixed seed gives the same samples every time. Standard library only: it starts in milliseconds.
"""

import ctypes
import sys

AUDIO_OUTPUT_SYNCHRONOUS, POS_CHARACTER, RATE, PITCH = 2, 1, 1, 3
SAMPLE_RATE = 22050
SEED = 1
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
    ]


def voice_files(lib) -> dict:
    """Language code -> voice file name, as the espeak-ng program resolves ``-v en-gb``."""
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(Voice))
    found, voices, i = {}, lib.espeak_ListVoices(None), 0
    while voices[i]:
        voice = voices[i].contents
        at = voice.languages  # (priority byte, name, NUL) items, ended by a zero priority byte
        while ctypes.string_at(at, 1) != b"\0":
            language = ctypes.string_at(at + 1)
            found.setdefault(language.decode().lower(), voice.identifier.decode().rsplit("/", 1)[-1].lower())
            at += 2 + len(language)
        i += 1
    return found


def main(library: str, data_parent: str, voice: str, rate: str, pitch: str, text: str) -> int:
    lib = ctypes.CDLL(library)
    if lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), 0) != SAMPLE_RATE:
        print("libespeak-ng did not start at 22050 Hz", file=sys.stderr)
        return 1
    chunks = []

    def collect(wav, count, _events):
        if count > 0:
            chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    callback = CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    # A voice file of that name first (``en``, ``en-us``), else the file that speaks that
    # language (``en-gb`` is the file ``en``), as the espeak-ng program does.
    language, _, variant = voice.partition("+")
    for name in (language, voice_files(lib).get(language.lower())):
        spec = f"{name}+{variant}" if variant else str(name)
        if name and lib.espeak_SetVoiceByName(spec.encode()) == 0:
            break
    else:
        print(f"libespeak-ng has no voice {voice!r}", file=sys.stderr)
        return 1
    lib.espeak_ng_SetRandSeed(ctypes.c_long(SEED))  # not the clock's
    lib.espeak_SetParameter(RATE, int(rate), 0)
    lib.espeak_SetParameter(PITCH, int(pitch), 0)
    data = text.encode()
    if lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, 0, None, None) != 0:
        print(f"libespeak-ng failed on {text!r}", file=sys.stderr)
        return 1
    lib.espeak_Synchronize()
    sys.stdout.buffer.write(b"".join(chunks))  # native byte order: little-endian on every platform we run
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
