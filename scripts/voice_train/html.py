"""Self-contained HTML pages for Snakemake's ``--report``: a sample player and a run summary.

Light: no torch. The WAVs are embedded as data URIs, so a page works on its own (the
report's viewer shows HTML in a frame, but offers WAV files only as downloads).
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path

from .evaluate import format_similarity
from .fsutil import read_json, write_text_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #666; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _audio(path: str | os.PathLike) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def write_listen_page(
    path: str | os.PathLike, voice: str, description: str, samples: list[tuple[str, str]]
) -> None:
    """A page with one player per ``(caption, wav_path)``."""
    rows = "\n".join(
        f"<h2>{escape(caption)}</h2>\n<p>{_audio(wav)}</p>\n"
        f'<p class="muted">{escape(os.path.basename(wav))}</p>'
        for caption, wav in samples
    )
    body = f"<p>Text condition: <q>{escape(description)}</q></p>\n{rows}"
    write_text_atomic(path, _page(f"voice-train samples: {voice}", body))


def _row(label: str, value: object, num: bool = False) -> str:
    cls = ' class="num"' if num else ""
    return f"<tr><th>{escape(label)}</th><td{cls}>{escape(str(value))}</td></tr>"


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def dataset_rows(manifest: dict) -> list[str]:
    """The manifest summary as table rows: clip counts, durations, what was dropped."""
    summary = manifest.get("summary", {})
    durations = sorted(e.get("duration_s", 0.0) for e in manifest.get("entries", []))
    rows = [
        _row("source", manifest.get("source", "n/a")),
        _row("source duration (s)", _fmt(summary.get("source_duration_s"), 1), True),
        _row("speech (s)", _fmt(summary.get("speech_duration_s"), 1), True),
        _row("kept in clips (s)", _fmt(summary.get("kept_duration_s"), 1), True),
        _row("clips", manifest.get("count", len(durations)), True),
    ]
    for split in ("train", "valid"):
        part = summary.get(split, {})
        rows.append(
            _row(
                f"{split} clips / s", f"{part.get('count', 'n/a')} / {_fmt(part.get('duration_s'), 1)}", True
            )
        )
    if durations:
        median = durations[len(durations) // 2]
        rows.append(
            _row(
                "clip length min / median / max (s)",
                f"{durations[0]:.1f} / {median:.1f} / {durations[-1]:.1f}",
                True,
            )
        )
    snr = summary.get("snr_db") or {}
    if snr:
        rows.append(
            _row(
                "clip SNR median / min (dB)",
                f"{_fmt(snr.get('median'), 1)} / {_fmt(snr.get('min'), 1)}",
                True,
            )
        )
    for key, label in (
        ("dropped_short", "dropped: too short"),
        ("dropped_silent", "dropped: mostly silent"),
        ("dropped_noisy", "dropped: too noisy (prepare.min_snr_db)"),
    ):
        part = summary.get(key, {})
        rows.append(
            _row(
                f"{label} (clips / s)",
                f"{part.get('count', 0)} / {_fmt(part.get('duration_s', 0.0), 1)}",
                True,
            )
        )
    others = summary.get("dropped_other_speakers")
    rows.append(
        _row(
            "left out: other voices (turns / s)",
            "screening off (speakers.enabled)"
            if others is None
            else f"{others.get('count', 0)} / {_fmt(others.get('duration_s', 0.0), 1)}",
            others is not None,
        )
    )
    speakers = summary.get("speakers")
    if speakers:
        rows.append(
            _row(
                "kept voice: share of the speech / how found",
                f"{_fmt(speakers.get('target_share'), 2)} / {speakers.get('target', 'n/a')}",
                True,
            )
        )
    rows.append(_row("forced cuts (no pause found)", summary.get("forced_cuts", "n/a"), True))
    rows.append(_row("sample rate (Hz)", manifest.get("sample_rate", "n/a"), True))
    return rows


def training_rows(status: dict) -> list[str]:
    return [
        _row("status", status.get("status", "n/a")),
        _row("model", status.get("model", "n/a")),
        _row("device / precision", f"{status.get('device', 'n/a')} / {status.get('precision', 'n/a')}"),
        _row("steps", f"{status.get('step', 'n/a')} / {status.get('total_steps', 'n/a')}", True),
        _row("validation loss: base model", _fmt(status.get("base_val_loss")), True),
        _row(
            "validation loss: best",
            f"{_fmt(status.get('best_val_loss'))} (step {status.get('best_step', 'n/a')})",
            True,
        ),
        _row("final train loss", _fmt(status.get("loss")), True),
        _row("tokens/s", _fmt(status.get("tokens_per_s"), 0), True),
        _row("training time (s)", _fmt(status.get("elapsed_s"), 1), True),
        _row("checkpoint", status.get("checkpoint", "n/a")),
        _row("checkpoint sha256", status.get("checkpoint_sha256", "n/a")),
    ]


SIMILARITY_MEANING = (
    "How much each group sounds like the voice: the cosine similarity of speaker embeddings "
    "(Resemblyzer) to the voice of the held-out validation clips, higher is closer. The ceiling is "
    "real training clips of the voice. A good fine-tune scores well above the base model and "
    "approaches the ceiling."
)
_GROUP_LABELS = {
    "finetuned": "fine-tuned model",
    "base": "base model (same prompts and seeds)",
    "ceiling": "ceiling: real training clips",
}


def _figure_html(summary: dict | None) -> str:
    return format_similarity(summary, sign="±", missing="n/a")


def similarity_section(result: dict) -> str:
    """Rule evaluate's figures (``voice_eval.json``): a sentence on what they mean, a table of the
    groups (all, text, continuation, range) and the result's note."""
    if result.get("status") != "completed":
        return f"<h3>Voice similarity</h3><p>{escape(result.get('note') or 'not evaluated')}</p>"
    head = "<tr><th>group</th><th>all</th><th>text</th><th>continuation</th><th>min / max</th></tr>"
    rows = []
    for group, label in _GROUP_LABELS.items():
        found = result.get("groups", {}).get(group) or {}
        overall = found.get("all")
        span = f"{overall['min']:.3f} / {overall['max']:.3f}" if overall else "n/a"
        cells = [_figure_html(found.get(part)) for part in ("all", "text", "continuation")] + [span]
        rows.append(
            f"<tr><th>{escape(label)}</th>"
            + "".join(f'<td class="num">{escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    reference, prompts = result.get("reference", {}), result.get("prompts", {})
    sources = (
        f"The voice: {reference.get('n', 'n/a')} {reference.get('split')} clips; continuation prompts: "
        f"the first {prompts.get('prompt_s', 'n/a')} s of {len(prompts.get('clips', []))} "
        f"{prompts.get('split')} clips (only the generated part is scored)."
    )
    parts = [
        "<h3>Voice similarity</h3>",
        f"<p>{escape(SIMILARITY_MEANING)}</p>",
        f"<table>{head}{''.join(rows)}</table>",
        f'<p class="muted">{escape(sources)}</p>',
    ]
    parts += [f'<p class="muted">{escape(n)}</p>' for n in result.get("notes", [])]
    if result.get("note"):
        parts.append(f"<p><strong>Note:</strong> {escape(result['note'])}</p>")
    return "\n".join(parts)


def write_summary_page(path: str | os.PathLike, voices: list[tuple[str, str, str, str]], block: str) -> None:
    """The run at a glance: per voice ``(name, manifest, train_status, voice_eval)`` tables, then
    the block."""
    parts = []
    for voice, manifest_path, status_path, evaluation_path in voices:
        parts.append(f"<h2>{escape(voice)}</h2>")
        manifest = read_json(manifest_path)
        status = read_json(status_path)
        evaluation = read_json(evaluation_path) if evaluation_path else None
        if manifest is not None:
            parts.append("<h3>Dataset</h3><table>" + "".join(dataset_rows(manifest)) + "</table>")
        if status is not None:
            parts.append("<h3>Training</h3><table>" + "".join(training_rows(status)) + "</table>")
        if evaluation is not None:
            parts.append(similarity_section(evaluation))
    parts.append(f"<h2>Report block</h2>\n<pre>{escape(block)}</pre>")
    write_text_atomic(path, _page("voice-train run summary", "\n".join(parts)))
