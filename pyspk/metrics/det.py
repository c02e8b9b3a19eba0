"""Detection error trade-off (DET) curves (Martin et al., Eurospeech 1997) and score histograms.

Both DET axes are normal deviates: x = Phi^-1(P_fa), y = Phi^-1(P_miss), so two
Gaussian score distributions give a straight line.  Points are the operating
points of :func:`pyspk.metrics.eer.operating_points`; rates of exactly 0 or 1
(infinite deviates) are clipped to the plotted range.  The EER of a curve is where
it crosses the diagonal P_miss = P_fa; each curve gets a marker there and its
value in the legend.

Readability with many systems: :func:`plot_det_panels` draws one panel per group
(the report uses one per back-end), so a panel holds one curve per system, and puts
each panel's legend *below* its axes, where it cannot cover a curve.
:func:`plot_score_histograms` draws target / non-target score histograms, one panel
per (trials list, back-end), with the EER threshold marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import norm

from pyspk.io import atomic_path
from pyspk.metrics.eer import compute_eer, operating_points

TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # 0.2 % would crowd 0.1 % on a small panel
Curves = Mapping[str, Tuple[np.ndarray, np.ndarray]]


def det_points(scores, labels, max_points: int = 5000) -> Tuple[np.ndarray, np.ndarray]:
    """(P_fa, P_miss) along the curve, thinned to about ``max_points`` points."""
    p_miss, p_fa, _ = operating_points(scores, labels)
    if len(p_miss) > max_points:
        keep = np.unique(np.linspace(0, len(p_miss) - 1, max_points).astype(int))
        p_miss, p_fa = p_miss[keep], p_fa[keep]
    return p_fa, p_miss


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_det(ax, curves: Curves, styles: Optional[Dict[str, dict]], limits: Sequence[float], title: str) -> None:
    lo, hi = norm.ppf(limits[0]), norm.ppf(limits[1])
    dev = lambda p: np.clip(norm.ppf(np.clip(p, 1e-12, 1 - 1e-12)), lo, hi)  # noqa: E731
    for k, (label, (scores, labs)) in enumerate(curves.items()):
        style = dict((styles or {}).get(label, {}))
        style.setdefault("color", f"C{k % 10}")
        p_fa, p_miss = det_points(scores, labs)
        eer = compute_eer(scores, labs)[0]
        (line,) = ax.plot(dev(p_fa), dev(p_miss), lw=1.3, label=f"{label}: EER {100 * eer:.2f}%", **style)
        # the EER point: where this curve meets the diagonal
        ax.plot(
            [dev(eer)],
            [dev(eer)],
            marker="o",
            ms=5,
            mfc="white",
            mec=line.get_color(),
            mew=1.5,
            linestyle="none",
            zorder=3,
        )
    ticks = [t for t in TICKS if limits[0] <= t <= limits[1]]
    ax.set_xticks(norm.ppf(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks], fontsize=8)
    ax.set_yticks(norm.ppf(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks], fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.plot([lo, hi], [lo, hi], color="0.75", lw=0.8, zorder=0)  # P_miss = P_fa: the EER line
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title)
    ax.grid(True, color="0.9")


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_det_panels(
    panels: Mapping[str, Curves],
    path,
    title: str = "DET",
    styles: Optional[Dict[str, dict]] = None,
    limits: Sequence[float] = (0.0005, 0.5),
) -> Path:
    """A PNG with one DET panel per ``panel title -> {label -> (scores, labels)}``.

    Each panel's legend (label and EER) sits below its axes; the EER point of every
    curve is marked with a circle on the diagonal.
    """
    plt = _pyplot()
    n = max(1, len(panels))
    rows = max([len(c) for c in panels.values()] or [1])
    # Fixed layout in inches: square axes side by side, each with its legend below it.
    side, left, gap, top, below = 3.4, 0.75, 0.55, 0.8, 0.75 + 0.17 * rows
    width, height = left + n * (side + gap), top + side + below
    fig = plt.figure(figsize=(width, height))
    for k, (name, curves) in enumerate(panels.items()):
        ax = fig.add_axes([(left + k * (side + gap)) / width, below / height, side / width, side / height])
        _draw_det(ax, curves, styles, limits, name)
        ax.legend(
            fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False, handlelength=2.5
        )
    if title:
        fig.suptitle(title, y=1 - 0.12 / height)
    return _save(fig, path)


def plot_det(
    curves: Curves,
    path,
    title: str = "DET",
    styles: Optional[Dict[str, dict]] = None,
    limits: Sequence[float] = (0.0005, 0.5),
) -> Path:
    """A PNG with one DET panel holding every curve of ``label -> (scores, labels)``."""
    return plot_det_panels({title: curves}, path, title="", styles=styles, limits=limits)


def plot_score_histograms(
    panels: Mapping[Tuple[str, str], Tuple[np.ndarray, np.ndarray]], path, title: str = "scores", bins: int = 50
) -> Path:
    """Target and non-target score histograms, one panel per ``(trials, backend) -> (scores, labels)``.

    Rows are trial lists, columns back-ends; densities (each class normalised on its own,
    so a small target set stays visible), the EER threshold as a vertical line.
    """
    plt = _pyplot()
    lists = sorted({t for t, _ in panels})
    backends = list(dict.fromkeys(b for _, b in panels))
    fig, axes = plt.subplots(
        len(lists), len(backends), figsize=(3.6 * len(backends), 2.5 * len(lists) + 0.6), squeeze=False
    )
    for i, trials in enumerate(lists):
        for j, backend in enumerate(backends):
            ax = axes[i][j]
            if (trials, backend) not in panels:
                ax.set_axis_off()
                continue
            scores, labels = panels[(trials, backend)]
            labels = np.asarray(labels, dtype=bool)
            edges = np.histogram_bin_edges(scores, bins=bins)
            ax.hist(scores[~labels], bins=edges, density=True, color="C3", alpha=0.5, label="non-target")
            ax.hist(scores[labels], bins=edges, density=True, color="C0", alpha=0.5, label="target")
            eer, thr = compute_eer(scores, labels)
            ax.axvline(thr, color="k", lw=1, ls="--", label="EER threshold")
            ax.set_title(f"{trials} / {backend}: EER {100 * eer:.2f}%", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            handles = ax.get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    # one legend for the figure, below the panels: a legend inside a panel would cover bars
    fig.legend(*handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _save(fig, path)
