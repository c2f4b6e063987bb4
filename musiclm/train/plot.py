"""Training curves from ``metrics.jsonl`` (matplotlib)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from musiclm.errors import DataError
from musiclm.files import atomic_write


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from a metrics log; lines cut by a kill are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no metrics log")
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = record.get("step")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and step is not None:
                series[key].append((int(step), float(value)))
    if not series:
        raise DataError(f"{path}: no metrics logged yet")
    return dict(series)


def _panels(names: list[str]) -> dict[str, list[str]]:
    """Group series: each training loss with its validation twin, mel distances per level together."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if name in ("steps_per_s",) or name.startswith("grad_norm/"):
            groups["speed and gradients"].append(name)
        elif name.startswith("lr/"):
            groups["learning rate"].append(name)
        elif name.startswith("val/") and "@" in name:
            groups[name.split("@")[0] + " per level"].append(name)
        else:
            groups[name.removeprefix("val/").removeprefix("loss/")].append(name)
    return dict(groups)


def plot_metrics(metrics: str | Path, out: str | Path) -> int:
    """Write the curves of ``metrics`` to the PNG ``out``; returns the number of panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics)
    panels = _panels(sorted(series))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, names) in zip(axes.flat, panels.items()):
        for name in names:
            steps, values = zip(*series[name])
            style = dict(marker="o", markersize=3) if name.startswith("val/") else {}
            ax.plot(steps, values, label=name, linewidth=1.2, **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if (
            title == "learning rate"
            or all(v > 0 for n in names for _, v in series[n])
            and title.endswith("loss")
        ):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(str(Path(metrics).parent.name or metrics), fontsize=11)
    fig.tight_layout()
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return len(panels)
