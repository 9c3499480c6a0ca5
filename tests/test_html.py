"""The report's pages: the sample player, the run summary, the loss curve."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import soundfile as sf

from voice_train.html import write_listen_page, write_summary_page
from voice_train.plots import draw_loss_curve


def test_listen_page_embeds_each_wav_whole(tmp_path):
    wavs = []
    for i, name in enumerate(("text.wav", "continuation.wav")):
        path = tmp_path / name
        sf.write(path, np.full(3200, 0.1 * (i + 1), dtype=np.float32), 32000, subtype="PCM_16")
        wavs.append((f"sample <{i}>", str(path)))
    page = tmp_path / "listen.html"
    write_listen_page(page, "v1", 'a "calm" voice & more', wavs)
    html = page.read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:audio/wav;base64,([^"]+)"', html)
    assert [base64.b64decode(e) for e in embedded] == [open(w, "rb").read() for _, w in wavs]
    assert "&quot;calm&quot; voice &amp; more" in html and "sample &lt;0&gt;" in html


def test_summary_page_has_the_dataset_and_training_figures(tmp_path):
    manifest = {
        "source": "data/v1.flac",
        "count": 3,
        "sample_rate": 32000,
        "entries": [{"duration_s": d} for d in (4.0, 9.5, 12.0)],
        "summary": {
            "source_duration_s": 60.0,
            "kept_duration_s": 25.5,
            "train": {"count": 2, "duration_s": 16.0},
            "valid": {"count": 1, "duration_s": 9.5},
            "dropped_short": {"count": 1, "duration_s": 1.2},
            "dropped_noisy": {"count": 2, "duration_s": 7.25},
            "dropped_other_speakers": {"count": 4, "duration_s": 11.5},
            "speakers": {"target": "dominant", "target_share": 0.812},
            "snr_db": {"median": 18.34, "min": 6.01},
        },
    }
    status = {
        "status": "completed",
        "step": 16,
        "total_steps": 16,
        "base_val_loss": 8.0812,
        "best_val_loss": 5.25,
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    (tmp_path / "s.json").write_text(json.dumps(status))
    page = tmp_path / "summary.html"
    write_summary_page(
        page, [("v1", str(tmp_path / "m.json"), str(tmp_path / "s.json"), "")], "=== BLOCK <x> ==="
    )
    html = page.read_text(encoding="utf-8")
    for text in (
        "4.0 / 9.5 / 12.0",
        "2 / 16.0",
        "1 / 1.2",
        "8.081",
        "5.250",
        "16 / 16",
        "=== BLOCK &lt;x&gt; ===",
        "18.3 / 6.0",
        "2 / 7.2",
        "4 / 11.5",
        "0.81 / dominant",
    ):
        assert text in html, text
    del manifest["summary"]["dropped_other_speakers"]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    write_summary_page(page, [("v1", str(tmp_path / "m.json"), str(tmp_path / "s.json"), "")], "block")
    assert "screening off (speakers.enabled)" in page.read_text(encoding="utf-8")


def test_summary_page_of_a_voice_that_never_got_far(tmp_path):
    page = tmp_path / "summary.html"
    none = [str(tmp_path / name) for name in ("none.json", "none2.json", "none3.json")]
    write_summary_page(page, [("v1", *none)], "block")
    html = page.read_text(encoding="utf-8")
    assert "<h2>v1</h2>" in html and "Training" not in html and "Voice similarity" not in html


def evaluation(status: str = "completed", note: str | None = None) -> dict:
    group = {
        "all": {"mean": 0.61, "std": 0.04, "n": 8, "min": 0.55, "max": 0.68},
        "text": {"mean": 0.6, "std": 0.03, "n": 4, "min": 0.55, "max": 0.64},
        "continuation": {"mean": 0.62, "std": 0.04, "n": 4, "min": 0.57, "max": 0.68},
    }
    ceiling = {"all": {"mean": 0.82, "std": 0.02, "n": 4, "min": 0.8, "max": 0.85}, "no_speech": 0}
    finetuned = {
        **group,
        "no_speech": 1,
        "copy_share": 0.125,
        "longest_copy_s": 1.4,
        "quality": {"ovrl": 2.71},
    }
    return {
        "status": status,
        "voice": "v1",
        "groups": {
            "finetuned": finetuned,
            "base": {**group, "all": {**group["all"], "mean": 0.45}},
            "ceiling": ceiling,
            "roundtrip": {"all": {"mean": 0.75, "std": 0.03, "n": 4, "min": 0.7, "max": 0.8}},
        },
        "held_out": {"split": "test", "n": 3},
        "prompts": {"prompt_s": 3, "clips": ["a", "b", "c", "d"]},
        "notes": ["no test clips: <x>"],
        "note": note,
    }


def test_summary_page_shows_the_figures_the_verdict_and_what_they_mean(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps(evaluation(note="a tiny model scores near the floor")))
    page = tmp_path / "summary.html"
    write_summary_page(page, [("v1", "m.json", "s.json", str(tmp_path / "e.json"))], "block")
    html = page.read_text(encoding="utf-8")
    for text in (
        "Does it sound like her?",
        "sounds more like her than the base model (0.61 vs 0.45); 0.14 below what the codec allows (0.75)",
        "copies its training audio in 1 of 8 pieces",
        "A good fine-tune scores well above the base model and near the round trip",
        '<th>fine-tuned model</th><td class="num">0.610 ± 0.040 (n=8)</td>',
        "0.450 ± 0.040 (n=8)",
        '<th>real: her test audio</th><td class="num">0.820 ± 0.020 (n=4)</td><td class="num">n/a',
        "<th>real through the codec</th>",
        "0.12 (1.4 s)",
        "2.71",
        "Her voice: 3 test clips; prompts: the first 3 s of 4 of them",
        "no test clips: &lt;x&gt;",
        "it does not say words you choose",
        "<strong>Note:</strong> a tiny model scores near the floor",
    ):
        assert text in html, text
    (tmp_path / "e.json").write_text(json.dumps({"status": "skipped", "note": "evaluate.enabled is false"}))
    write_summary_page(page, [("v1", "m.json", "s.json", str(tmp_path / "e.json"))], "block")
    html = page.read_text(encoding="utf-8")
    assert "evaluate.enabled is false" in html and "0.610" not in html


def test_the_listen_page_plays_each_prompt_side_by_side(tmp_path):
    import numpy as np
    import soundfile as sf

    from voice_train.html import write_eval_listen_page

    result = evaluation()
    for group in ("ceiling", "roundtrip", "base", "finetuned"):
        item = {
            "kind": "continuation",
            "index": 0,
            "similarity": 0.5,
            "speech": group != "base",
            "quality": None,
        }
        result["groups"][group]["items"] = [{**item, "copy_s": 0.2}]
        sf.write(tmp_path / f"{group}_continuation_0.wav", np.zeros(800, np.float32), 16000)
    page = tmp_path / "listen.html"
    write_eval_listen_page(page, result, tmp_path)
    html = page.read_text(encoding="utf-8")
    assert html.count("<audio") == 4 and "(no speech)" in html and "copy 0.2 s" in html
    heads = [
        f"<th>{h}"
        for h in ("real: her test audio", "real through the codec", "base model", "fine-tuned model")
    ]
    assert [html.index(h) for h in heads] == sorted(html.index(h) for h in heads), (
        "real first, fine-tuned last"
    )


def test_loss_curve_is_a_png(tmp_path):
    history = {"loss": [[s, 8.0 - s * 0.05] for s in range(1, 61)], "val": [[0, 8.1], [30, 6.9], [60, 5.2]]}
    path = tmp_path / "loss.png"
    draw_loss_curve(history, path, "v1: tiny, 60 steps")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 450)
    assert not list(tmp_path.glob(".loss.png.*")), "no temporary file left"
