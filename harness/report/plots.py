"""RD-curve and per-image BD-rate plots (matplotlib, Agg back-end, no display).

Measured curves are solid lines with markers, published anchors dashed and
labelled "(published)", so a reader never confuses the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.atomic import write_atomic


@dataclass(frozen=True)
class PlotCurve:
    label: str
    bpp: np.ndarray
    quality: np.ndarray
    published: bool = False
    anchor: bool = False


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def rd_plot(path: Path, title: str, ylabel: str, curves: list[PlotCurve]) -> None:
    """bpp (x) vs quality in dB (y), one line per curve, sorted by rate."""
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    markers = "os^vD<>ph*X"
    measured = [c for c in curves if not c.published]
    published = [c for c in curves if c.published]
    # Separate palettes so a published curve never shares a measured one's colour.
    colours = [colormaps["tab10"](i % 10) for i in range(len(measured))]
    colours += [colormaps["Dark2"](i % 8) for i in range(len(published))]
    for index, (curve, colour) in enumerate(zip(measured + published, colours)):
        order = np.argsort(curve.bpp)
        label = f"{curve.label} (published)" if curve.published else curve.label
        if curve.anchor:
            label += " [anchor]"
        ax.plot(
            curve.bpp[order],
            curve.quality[order],
            color=colour,
            linestyle="--" if curve.published else "-",
            marker=None if curve.published else markers[index % len(markers)],
            linewidth=2.2 if curve.anchor else 1.4,
            markersize=4,
            alpha=0.75 if curve.published else 1.0,
            label=label,
        )
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    rates = np.concatenate([c.bpp[np.isfinite(c.bpp)] for c in measured] or [np.empty(0)])
    qualities = np.concatenate([c.quality[np.isfinite(c.quality)] for c in measured] or [np.empty(0)])
    if rates.size and qualities.size:
        # Zoom on the measured range so published curves spanning 0.03-4 bpp
        # do not squash the codecs under test.
        ax.set_xlim(0, rates.max() * 1.1)
        ax.set_ylim(qualities.min() - 1.0, qualities.max() + 1.0)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def per_image_plot(path: Path, title: str, values: dict[str, np.ndarray]) -> None:
    """Box plot of per-image BD-rates (%), one box per codec."""
    labels = list(values)
    fig = Figure(figsize=(max(5.0, 1.1 * len(labels) + 2), 4.5))
    ax = fig.add_subplot()
    ax.boxplot([values[label] for label in labels], showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel("per-image BD-rate (%)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
