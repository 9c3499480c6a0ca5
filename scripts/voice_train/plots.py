"""The training loss curve as a PNG (matplotlib, headless); drawn by the train rule."""

from __future__ import annotations

import os

from .fsutil import atomic_path


def draw_loss_curve(history: dict, path: str | os.PathLike, title: str) -> None:
    """Train loss per step and validation loss per evaluation, with the best point marked.

    ``history`` is the trainer's ``{"loss": [[step, loss], ...], "val": [[step, val], ...]}``, and
    with ``select_by: voice`` ``"voice": [[step, similarity], ...]``, drawn on a second axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if history.get("loss"):
        steps, losses = zip(*history["loss"], strict=True)
        ax.plot(steps, losses, color="#9db4d3", linewidth=1, label="train loss (per step)")
        if len(losses) >= 20:
            window = max(5, len(losses) // 25)
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
                for i in range(len(losses))
            ]
            ax.plot(steps, smooth, color="#1f4e8c", linewidth=1.5, label=f"train loss ({window}-step mean)")
    valid = [(s, v) for s, v in history.get("val", []) if v is not None]
    if valid:
        v_steps, v_losses = zip(*valid, strict=True)
        ax.plot(v_steps, v_losses, "o-", color="#d1495b", linewidth=1.5, label="validation loss")
        best = min(range(len(v_losses)), key=v_losses.__getitem__)
        ax.annotate(
            f"best {v_losses[best]:.3f} (step {v_steps[best]})",
            (v_steps[best], v_losses[best]),
            textcoords="offset points",
            xytext=(-10, 12),
            ha="right",
            fontsize=9,
        )
        ax.axhline(
            v_losses[0], color="#d1495b", linestyle=":", linewidth=1, label=f"base model {v_losses[0]:.3f}"
        )
    sounds = [(step, v) for step, v in history.get("voice") or [] if v is not None]
    if sounds:  # how it sounds (select_by: voice), on its own axis
        twin = ax.twinx()
        s_steps, s_values = zip(*sounds, strict=True)
        twin.plot(s_steps, s_values, "s--", color="#2a9d5c", linewidth=1.5, label="sounds like her")
        top = max(range(len(s_values)), key=lambda i: (s_steps[i] > 0, s_values[i]))
        twin.annotate(
            f"most like her {s_values[top]:.3f} (step {s_steps[top]})",
            (s_steps[top], s_values[top]),
            textcoords="offset points",
            xytext=(-10, -16),
            ha="right",
            fontsize=9,
            color="#2a9d5c",
        )
        twin.set_ylabel("speaker similarity to her validation clips", color="#2a9d5c")
        twin.legend(loc="center right", fontsize=9)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
