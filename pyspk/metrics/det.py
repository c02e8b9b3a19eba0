"""Detection error trade-off (DET) curves (Martin et al., Eurospeech 1997).

Both axes are normal deviates: x = Phi^-1(P_fa), y = Phi^-1(P_miss), so two
Gaussian score distributions give a straight line.  Points are the operating
points of :func:`pyspk.metrics.eer.operating_points`; rates of exactly 0 or 1
(infinite deviates) are clipped to the plotted range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import norm

from pyspk.io import atomic_path
from pyspk.metrics.eer import compute_eer, operating_points

TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def det_points(scores, labels, max_points: int = 5000) -> Tuple[np.ndarray, np.ndarray]:
    """(P_fa, P_miss) along the curve, thinned to about ``max_points`` points."""
    p_miss, p_fa, _ = operating_points(scores, labels)
    if len(p_miss) > max_points:
        keep = np.unique(np.linspace(0, len(p_miss) - 1, max_points).astype(int))
        p_miss, p_fa = p_miss[keep], p_fa[keep]
    return p_fa, p_miss


def plot_det(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], path, title: str = "DET",
             styles: Optional[Dict[str, dict]] = None, limits: Sequence[float] = (0.0005, 0.5)) -> Path:
    """Write a PNG with one DET curve per ``label -> (scores, labels)`` (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = norm.ppf(limits[0]), norm.ppf(limits[1])
    fig, ax = plt.subplots(figsize=(6, 6))
    for label, (scores, labs) in curves.items():
        p_fa, p_miss = det_points(scores, labs)
        x = np.clip(norm.ppf(np.clip(p_fa, 1e-12, 1 - 1e-12)), lo, hi)
        y = np.clip(norm.ppf(np.clip(p_miss, 1e-12, 1 - 1e-12)), lo, hi)
        eer = compute_eer(scores, labs)[0]
        ax.plot(x, y, label=f"{label} (EER {100 * eer:.2f}%)", **(styles or {}).get(label, {}))
    ticks = [t for t in TICKS if limits[0] <= t <= limits[1]]
    ax.set_xticks(norm.ppf(ticks))
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks))
    ax.set_yticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.plot([lo, hi], [lo, hi], color="0.8", lw=0.8, zorder=0)  # EER line
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title)
    ax.grid(True, color="0.9")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
