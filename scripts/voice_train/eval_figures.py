"""Rule evaluate's figures as people read them: the report block's values, the verdict, the notes.

Light (no torch): the report rule and the HTML pages import it.
"""

from __future__ import annotations

SCHEMA = "voice_eval/2"
# finetuned: the fine-tuned model's pieces; base: the base model's, same prompts and seeds;
# ceiling: her real test audio after each prompt; roundtrip: that audio after the model's own
# codec (encoded and decoded), what any model on this codec can reach at best.
GROUPS = ("finetuned", "base", "ceiling", "roundtrip")
COPY_S = 1.0  # a piece that repeats this much of the training codes in a row copies
WHAT_IT_DOES_NOT = (
    "A MusicGen fine-tune learns how she sounds, not language: it does not say words you choose; "
    "its text condition is a description, and a prompt of her voice is carried on in her manner."
)


def format_similarity(summary: dict | None, sign: str = "+/-", missing: str = "N/A") -> str:
    """A group's figure as the report block writes it: ``0.612 +/- 0.041 (n=8)`` (mean, standard
    deviation, count), or ``missing``."""
    if not summary:
        return missing
    return f"{summary['mean']:.3f} {sign} {summary['std']:.3f} (n={summary['n']})"


def _completed(result: dict | None) -> bool:
    return (result or {}).get("status") == "completed"


def group_figures(result: dict | None) -> dict[str, str]:
    """Group -> its figure (``format_similarity``) from a ``voice_eval.json``; N/A for each group
    of a missing, skipped or unreadable result."""
    groups = (result or {}).get("groups") or {}
    done = _completed(result)
    return {g: format_similarity((groups.get(g) or {}).get("all") if done else None) for g in GROUPS}


def report_values(result: dict | None) -> dict[str, str]:
    """The report block's other evaluate keys: copy share, quality per group, pieces without
    speech, and the verdict (``N/A`` when not evaluated)."""
    groups = (result or {}).get("groups") or {} if _completed(result) else {}

    def quality(group: str) -> str:
        value = ((groups.get(group) or {}).get("quality") or {}).get("ovrl")
        return "N/A" if value is None else f"{value:.2f}"

    finetuned = groups.get("finetuned") or {}
    share = finetuned.get("copy_share")
    return {
        "voice_similarity_roundtrip": group_figures(result)["roundtrip"],
        "voice_copy_share": "N/A"
        if share is None
        else f"{share:.2f} (longest {finetuned['longest_copy_s']:.1f} s)",
        "voice_no_speech": "N/A"
        if not groups
        else ", ".join(f"{g} {(groups.get(g) or {}).get('no_speech', 0)}" for g in ("finetuned", "base")),
        "voice_quality_finetuned": quality("finetuned"),
        "voice_quality_base": quality("base"),
        "voice_quality_real": quality("ceiling"),
        "voice_quality_roundtrip": quality("roundtrip"),
        "voice_verdict": verdict(result) if _completed(result) else "N/A",
    }


def _mean(result: dict, group: str) -> float | None:
    return (((result.get("groups") or {}).get(group) or {}).get("all") or {}).get("mean")


def verdict(result: dict) -> str:
    """One plain line: better than the base model or not, how far from what the codec allows,
    whether it copies, and pieces that are not speech."""
    finetuned, base = _mean(result, "finetuned"), _mean(result, "base")
    ceiling, roundtrip = _mean(result, "ceiling"), _mean(result, "roundtrip")
    if finetuned is None or base is None:
        return "not evaluated: no pieces were made"
    parts = []
    gain = finetuned - base
    if gain > 0.02:
        parts.append(f"sounds more like her than the base model ({finetuned:.2f} vs {base:.2f})")
    elif gain < -0.02:
        parts.append(f"sounds less like her than the base model ({finetuned:.2f} vs {base:.2f})")
    else:
        parts.append(f"no closer to her than the base model ({finetuned:.2f} vs {base:.2f})")
    reach = roundtrip if roundtrip is not None else ceiling
    if reach is not None:
        what = "what the codec allows" if roundtrip is not None else "her real voice"
        parts.append(f"{max(0.0, reach - finetuned):.2f} below {what} ({reach:.2f})")
    group = (result.get("groups") or {}).get("finetuned") or {}
    n = (group.get("all") or {}).get("n", 0)
    copying = round((group.get("copy_share") or 0.0) * n)
    parts.append(
        f"copies its training audio in {copying} of {n} pieces (≥ {COPY_S:g} s)"
        if copying
        else f"no piece repeats {COPY_S:g} s of its training audio"
    )
    if group.get("no_speech"):
        parts.append(f"{group['no_speech']} of {n} pieces hold no speech")
    return "; ".join(parts)


def headline(result: dict) -> str:
    """One line for the console and the log."""
    if not _completed(result):
        return result.get("note") or result.get("status", "not evaluated")
    figures = group_figures(result)
    return (
        f"similarity to her held-out voice: fine-tuned {figures['finetuned']}, base {figures['base']}, "
        f"real {figures['ceiling']}, real through the codec {figures['roundtrip']}; {verdict(result)}"
    )


def demo_note(model_name: str, steps: object) -> str:
    """What a random-init preset's figures mean (the demo's ``tiny``)."""
    return (
        f"model.name is {model_name!r}, a randomly initialised demo model trained for {steps} steps: "
        "its samples are not speech (its codec is random too, and decodes any codes to much the same "
        "sound), so the fine-tuned and the base model's pieces sit at the floor of this measure, and "
        "even her real voice through that codec is not her voice any more (the round trip). The "
        "figures show that the measure runs, not what a fine-tune of a real model reaches."
    )


def skipped_result(voice: str) -> dict:
    return {
        "schema": SCHEMA,
        "voice": voice,
        "status": "skipped",
        "note": "evaluate.enabled is false: no samples were made or scored",
    }
