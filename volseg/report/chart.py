"""The leaderboard chart: the metric per configuration as horizontal bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from volseg.io.atomic import atomic_path


def _shorten(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_leaderboard(labels: Sequence[str], values: Sequence[float | None],
                     errors: Sequence[float | None] | None, texts: Sequence[str], xlabel: str,
                     title: str, path: Path) -> Path:
    """Horizontal bars of ``values`` in the order given (top down), error bars ``errors``.

    ``texts`` are written at the end of each bar (or of its error bar); a configuration without
    a value gets no bar, only its text (``failed``) in red. Saved as PNG, atomically.
    """
    # The object-oriented API with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 1.2 + 0.35 * len(labels)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(labels)))
    widths = [v if v is not None else 0.0 for v in values]
    xerr = [e or 0.0 for e in errors] if errors else [0.0] * len(labels)
    axes.barh(positions, widths, xerr=xerr if errors else None, color="tab:blue",
              ecolor="black", capsize=3)
    ends = [w + e for w, e in zip(widths, xerr)]
    for position, value, end, text in zip(positions, values, ends, texts):
        axes.text(end, position, f" {text}", va="center", fontsize=8,
                  color="black" if value is not None else "tab:red")
    axes.set_yticks(positions, [_shorten(label) for label in labels], fontsize=8)
    axes.invert_yaxis()
    # Room on the right for the texts.
    axes.set_xlim(0, max(ends, default=0.0) * 1.3 or 1.0)
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    return path
