"""Self-contained HTML pages for Snakemake's ``--report``: a sample player and a run summary.

Light: no torch. The WAVs are embedded as data URIs, so a page works on its own (the
report's viewer shows HTML in a frame, but offers WAV files only as downloads).
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path

from .eval_figures import WHAT_IT_DOES_NOT, format_similarity, verdict
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
    for split in ("train", "valid", "test"):
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
        ("dropped_guard", "left out: between splits (prepare.split_guard_s)"),
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
    "How much each group sounds like her, on the test block of the recording, which training never "
    "read: the cosine similarity of speaker embeddings (Resemblyzer) to her voice in the other test "
    "clips, higher is closer; a piece without speech scores 0. 'real' is her own audio after each "
    "prompt; 'real through the codec' is that audio encoded and decoded by the model's codec, the "
    "best a model on this codec can reach. A good fine-tune scores well above the base model and "
    "near the round trip, without copying its training audio."
)
_GROUP_LABELS = {
    "finetuned": "fine-tuned model",
    "base": "base model (same prompts and seeds)",
    "ceiling": "real: her test audio",
    "roundtrip": "real through the codec",
}


def _figure_html(summary: dict | None) -> str:
    return format_similarity(summary, sign="±", missing="n/a")


def similarity_section(result: dict) -> str:
    """Rule evaluate's figures (``voice_eval.json``): what they mean, the verdict, a table of the
    groups (similarity all / text / continuation, quality, no speech, copying) and the notes."""
    if result.get("status") != "completed":
        return f"<h3>Does it sound like her?</h3><p>{escape(result.get('note') or 'not evaluated')}</p>"
    head = (
        "<tr><th>group</th><th>all</th><th>text</th><th>continuation</th><th>DNSMOS ovrl</th>"
        "<th>no speech</th><th>copies ≥ 1 s (longest)</th></tr>"
    )
    rows = []
    for group, label in _GROUP_LABELS.items():
        found = result.get("groups", {}).get(group) or {}
        quality = (found.get("quality") or {}).get("ovrl")
        share = found.get("copy_share")
        copies = "n/a" if share is None else f"{share:.2f} ({found.get('longest_copy_s', 0):.1f} s)"
        cells = [_figure_html(found.get(part)) for part in ("all", "text", "continuation")]
        cells += [_fmt(quality, 2), str(found.get("no_speech", "n/a")) if found else "n/a", copies]
        rows.append(
            f"<tr><th>{escape(label)}</th>"
            + "".join(f'<td class="num">{escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    held, prompts = result.get("held_out", {}), result.get("prompts", {})
    sources = (
        f"Her voice: {held.get('n', 'n/a')} {held.get('split')} clips; prompts: the first "
        f"{prompts.get('prompt_s', 'n/a')} s of {len(prompts.get('clips', []))} of them (only what "
        "follows is scored, against the other clips)."
    )
    parts = [
        "<h3>Does it sound like her?</h3>",
        f"<p><strong>{escape(verdict(result))}</strong></p>",
        f"<p>{escape(SIMILARITY_MEANING)}</p>",
        f"<table>{head}{''.join(rows)}</table>",
        f'<p class="muted">{escape(sources)}</p>',
        f'<p class="muted">{escape(WHAT_IT_DOES_NOT)}</p>',
    ]
    parts += [f'<p class="muted">{escape(n)}</p>' for n in result.get("notes", [])]
    if result.get("note"):
        parts.append(f"<p><strong>Note:</strong> {escape(result['note'])}</p>")
    return "\n".join(parts)


def write_eval_listen_page(path: str | os.PathLike, result: dict, wav_dir: str | os.PathLike) -> None:
    """Rule evaluate's pieces side by side: per prompt her real continuation, its round trip, the
    base and the fine-tuned piece, each with its figures; then the text samples."""
    voice = result.get("voice", "")
    if result.get("status") != "completed":
        body = f"<p>{escape(result.get('note') or 'not evaluated')}</p>"
        write_text_atomic(path, _page(f"voice-train: does {voice} sound like her?", body))
        return
    groups, folder = result.get("groups", {}), Path(wav_dir)

    def cell(group: str, kind: str, index: int) -> str:
        items = [
            i for i in (groups.get(group) or {}).get("items", []) if i["kind"] == kind and i["index"] == index
        ]
        wav = folder / f"{group}_{kind}_{index}.wav"
        if not items or not wav.exists():
            return "<td class='muted'>n/a</td>"
        item = items[0]
        quality = (item.get("quality") or {}).get("ovrl")
        copy = item.get("copy_s")
        facts = f"similarity {item['similarity']:.3f}" + ("" if item["speech"] else " (no speech)")
        facts += "" if quality is None else f", DNSMOS {quality:.2f}"
        facts += "" if copy is None else f", copy {copy:.1f} s"
        return f"<td>{_audio(wav)}<br><span class='muted'>{escape(facts)}</span></td>"

    order = [g for g in ("ceiling", "roundtrip", "base", "finetuned") if g in groups]
    head = "<tr><th>prompt</th>" + "".join(f"<th>{escape(_GROUP_LABELS[g])}</th>" for g in order) + "</tr>"
    prompts = result.get("prompts", {}).get("clips", [])
    rows = [
        f"<tr><th>{escape(os.path.basename(name))}</th>"
        + "".join(cell(g, "continuation", i) for g in order)
        + "</tr>"
        for i, name in enumerate(prompts)
    ]
    text_order = [g for g in ("base", "finetuned") if g in groups]
    n_text = (
        max(((groups.get(g) or {}).get("text") or {}).get("n", 0) for g in text_order) if text_order else 0
    )
    text_rows = [
        f"<tr><th>text {i + 1}</th>" + "".join(cell(g, "text", i) for g in text_order) + "</tr>"
        for i in range(n_text)
    ]
    body = "\n".join(
        [
            f"<p><strong>{escape(verdict(result))}</strong></p>",
            f"<h2>Continuations of test clips</h2><table>{head}{''.join(rows)}</table>",
            "<h2>From the description alone</h2><table><tr><th></th>"
            + "".join(f"<th>{escape(_GROUP_LABELS[g])}</th>" for g in text_order)
            + f"</tr>{''.join(text_rows)}</table>",
            f'<p class="muted">{escape(WHAT_IT_DOES_NOT)}</p>',
            *(f'<p class="muted">{escape(n)}</p>' for n in result.get("notes", [])),
            *([f"<p><strong>Note:</strong> {escape(result['note'])}</p>"] if result.get("note") else []),
        ]
    )
    write_text_atomic(path, _page(f"voice-train: does {voice} sound like her?", body))


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
