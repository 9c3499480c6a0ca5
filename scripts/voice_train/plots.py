"""The training loss curve as a PNG (matplotlib, headless); drawn by the train rule."""

from __future__ import annotations

import os

from .fsutil import atomic_path


def draw_loss_curve(history: dict, path: str | os.PathLike, title: str) -> None:
    """Train loss per step and validation loss per evaluation, with the best point marked.

    ``history`` is the trainer's ``{"loss": [[step, loss], ...], "val": [[step, val], ...]}``.
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
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
