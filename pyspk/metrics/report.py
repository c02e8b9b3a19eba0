"""The report stage: every system's scores/metrics.json -> results.md, results.json, det.png.

For each system ``S`` of the recipe it reads ``EXP/S/scores/metrics.json`` (written
by ``pyspk score``) and names ``EXP/S/config.yaml``.  ``results.md`` has one row per
system x back-end x trials list (EER %, minDCF(0.01), minDCF(0.001), Cllr when present),
then the command and each system's config, and for a system trained with MGDA the
summary of its balancing weight alpha (the classifier loss's weight) over the steps
of ``EXP/S/train.csv``.  ``det.png`` holds the DET curves of every
system on the *first* trials list (sorted by name, normally ``trials``), one panel per
back-end with its legend (system and EER) below the axes; each further list ``L`` gets
``det_L.png``.  ``hist_S.png`` holds system S's target / non-target score histograms,
one panel per trials list and back-end.  Curves are drawn from the score files
``EXP/S/scores/<L>.<backend>`` and the key copy ``EXP/S/scores/<L>``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from pyspk.io import atomic_write_text
from pyspk.provenance import header, provenance

STYLES = ("-", "--", ":", "-.")


def load_system(exp_dir: Path, system: str) -> dict:
    d = exp_dir / system
    mfile = d / "scores" / "metrics.json"
    if not d.is_dir():
        raise FileNotFoundError(f"system '{system}': {d} does not exist")
    if not mfile.is_file():
        raise FileNotFoundError(f"system '{system}': {mfile} not found (run the score stage)")
    cfg = d / "config.yaml"
    return {
        "metrics": json.loads(mfile.read_text()),
        "config": str(cfg) if cfg.is_file() else None,
        "scores_dir": str(d / "scores"),
        "alpha": alpha_summary(d / "train.csv"),
    }


def alpha_summary(train_csv: Path) -> dict | None:
    """Median and 5-95 % range of the ``alpha`` column of train.csv (MGDA's weight of the
    classifier loss per step); None without the file or without finite values."""
    if not train_csv.is_file():
        return None
    with open(train_csv, newline="") as f:
        values = [float(r["alpha"]) for r in csv.DictReader(f) if r.get("alpha") not in (None, "")]
    values = np.array([v for v in values if math.isfinite(v)])
    if values.size == 0:
        return None
    p5, med, p95 = np.percentile(values, [5, 50, 95])
    return {"median": float(med), "p5": float(p5), "p95": float(p95), "steps": int(values.size)}


def read_scored(scores_dir: Path, trials_name: str, backend: str):
    """(scores, labels) of one score file, aligned with the key copy by (enroll, test)."""
    key = {}
    for line in (scores_dir / trials_name).read_text().splitlines():
        e, t, lab = line.split()
        key[(e, t)] = lab == "target"
    scores, labels = [], []
    path = scores_dir / f"{trials_name}.{backend}"
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        e, t, s = line.split()
        if (e, t) not in key:
            raise ValueError(f"{path}:{lineno}: trial '{e} {t}' is not in {scores_dir / trials_name}")
        scores.append(float(s))
        labels.append(key[(e, t)])
    return np.array(scores), np.array(labels)


def markdown_table(systems: Dict[str, dict]) -> List[str]:
    rows = [
        "| System | Back-end | Trials | EER (%) | minDCF(0.01) | minDCF(0.001) | Cllr |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, info in systems.items():
        for trials, backends in info["metrics"].items():
            for backend, m in backends.items():
                cllr = f"{m['cllr']:.3f}" if "cllr" in m else "-"
                rows.append(
                    f"| {name} | {backend} | {trials} | {100 * m['eer']:.2f} | "
                    f"{m.get('min_dcf_0.01', float('nan')):.4f} | "
                    f"{m.get('min_dcf_0.001', float('nan')):.4f} | {cllr} |"
                )
    return rows


def write_report(exp_dir, systems: Sequence[str], command: str, out_path, plot: bool = True) -> dict:
    """Write results.md (out_path), results.json and det*.png beside it; returns the json dict."""
    exp_dir, out_path = Path(exp_dir), Path(out_path)
    if not systems:
        raise ValueError("no systems to report")
    info = {s: load_system(exp_dir, s) for s in systems}
    record = provenance(command)
    lines = [
        "# Results",
        "",
        header(record),
        "",
        *markdown_table(info),
        "",
        "EER in %, minDCF normalised (c_miss = c_fa = 1); Cllr of the logistic-regression "
        "calibrated scores (fitted on the first trials list, so optimistic there).",
        "",
        f"Command: `{command}`",
        "",
        "Systems:",
    ]
    for s, i in info.items():
        a = i["alpha"]
        alpha = (
            (
                f"; MGDA alpha (classifier weight) median {a['median']:.3f}, 5-95 % "
                f"{a['p5']:.3f}-{a['p95']:.3f} over {a['steps']} steps"
            )
            if a
            else ""
        )
        lines.append(f"- {s}: config `{i['config'] or 'missing (no config.yaml)'}`, scores `{i['scores_dir']}`{alpha}")
    dets = _plot_dets(info, out_path.parent) if plot else []
    hists = _plot_histograms(info, out_path.parent) if plot else []
    if dets:
        lines += ["", "DET curves (one panel per back-end): " + ", ".join(f"![{p.stem}]({p.name})" for p in dets)]
    if hists:
        lines += [
            "",
            "Score histograms (target / non-target, per system): " + ", ".join(f"![{p.stem}]({p.name})" for p in hists),
        ]
    atomic_write_text(out_path, "\n".join(lines) + "\n")
    result = {
        "command": command,
        "provenance": record,
        "systems": info,
        "det": [p.name for p in dets],
        "histograms": [p.name for p in hists],
    }
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    return result


def _plot_dets(info: Dict[str, dict], out_dir: Path) -> List[Path]:
    """det.png (first trials list) and det_<L>.png: one panel per back-end, one curve per system."""
    from pyspk.metrics.det import plot_det_panels

    lists = sorted({t for i in info.values() for t in i["metrics"]})
    styles = {
        system: {"color": f"C{k % 10}", "linestyle": STYLES[(k // 10) % len(STYLES)]} for k, system in enumerate(info)
    }
    paths = []
    for n, trials in enumerate(lists):
        panels: Dict[str, dict] = {}
        for system, i in info.items():
            for backend, scored in _scored(i, trials).items():
                panels.setdefault(backend, {})[system] = scored
        if panels:
            paths.append(
                plot_det_panels(
                    panels,
                    out_dir / ("det.png" if n == 0 else f"det_{trials}.png"),
                    title=f"DET: {trials}",
                    styles=styles,
                )
            )
    return paths


def _plot_histograms(info: Dict[str, dict], out_dir: Path) -> List[Path]:
    """hist_<system>.png: target / non-target scores per trials list (rows) and back-end (columns)."""
    from pyspk.metrics.det import plot_score_histograms

    paths = []
    for system, i in info.items():
        panels = {
            (trials, backend): scored for trials in i["metrics"] for backend, scored in _scored(i, trials).items()
        }
        if panels:
            paths.append(plot_score_histograms(panels, out_dir / f"hist_{system}.png", title=f"scores: {system}"))
    return paths


def _scored(i: dict, trials: str) -> Dict[str, tuple]:
    """backend -> (scores, labels) of one system's trials list, for the score files present."""
    sdir = Path(i["scores_dir"])
    out = {}
    for backend in i["metrics"].get(trials, {}):
        if (sdir / trials).is_file() and (sdir / f"{trials}.{backend}").is_file():
            out[backend] = read_scored(sdir, trials, backend)
    return out
