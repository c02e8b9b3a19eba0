"""Results pages: several runs' ``results.json`` (one per seed) -> one markdown page.

A page under ``docs/results/`` is never pasted by hand: ``pyspk results-page`` writes it from the
runs' ``results.json`` files, each of which records its commit, date, CPU class and command
(:mod:`pyspk.provenance`). The page is headed by those records and by the command that wrote
the page, so anyone can regenerate or reproduce it. Runs are grouped by their commit: one table
per commit (or per label, when runs are given as ``LABEL=PATH``), each figure the mean and
sample standard deviation over that group's runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from pyspk.provenance import header

Figure = Tuple[str, str, str]  # (system, trials list, back-end)


def load_run(path) -> dict:
    """One run's results.json (a path to the file or to the exp dir holding it); ``LABEL=PATH``
    names the group the run belongs to (e.g. ``online=exp_online``), else its commit groups it."""
    label = None
    text = str(path)
    if "=" in text and not Path(text).exists():
        label, text = text.split("=", 1)
    path = Path(text)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("systems"), dict):
        raise ValueError(f"{path}: not a results.json of the report stage (no 'systems')")
    data.setdefault("provenance", {"command": data.get("command", "")})
    data["_path"] = str(path)
    data["_label"] = label
    return data


def _figures(run: dict) -> Dict[Figure, dict]:
    out = {}
    for system, entry in run["systems"].items():
        for trials, backends in entry.get("metrics", {}).items():
            for backend, m in backends.items():
                out[(system, trials, backend)] = m
    return out


def _mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def _cell(values: Sequence[float], scale: float, digits: int) -> str:
    if not values:
        return "-"
    mean, sd = _mean_sd([scale * v for v in values])
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def table(runs: List[dict]) -> List[str]:
    """Markdown rows: system x trials x back-end, EER % and minDCF(0.01) as mean ± sd over runs."""
    figs = [_figures(r) for r in runs]
    keys: List[Figure] = []
    for f in figs:
        keys += [k for k in f if k not in keys]
    rows = ["| System | Trials | Back-end | EER (%) | minDCF(0.01) | runs |", "|---|---|---|---:|---:|---:|"]
    for k in keys:
        present = [f[k] for f in figs if k in f]
        eer = [m["eer"] for m in present if "eer" in m]
        dcf = [m["min_dcf_0.01"] for m in present if "min_dcf_0.01" in m]
        rows.append(f"| {k[0]} | {k[1]} | {k[2]} | {_cell(eer, 100.0, 2)} | {_cell(dcf, 1.0, 4)} | {len(present)} |")
    return rows


def render(runs: List[dict], title: str, command: str, intro: str = "") -> str:
    """The page: title, how it was written, then per commit its runs' provenance and table."""
    if not runs:
        raise ValueError("no runs to tabulate")
    lines = [
        f"# {title}",
        "",
        f"Written by `{command}` from the runs' results.json; regenerate it with that command rather than editing it.",
        "",
    ]
    if intro.strip():
        lines += [intro.strip(), ""]
    groups: Dict[str, List[dict]] = {}
    for r in runs:  # a label groups its runs whatever their commits (each run's is listed below)
        groups.setdefault(r.get("_label") or r["provenance"].get("commit", "unknown"), []).append(r)
    for group in groups.values():
        first, label = group[0]["provenance"], group[0].get("_label")
        commits = ", ".join(dict.fromkeys(r["provenance"].get("commit", "unknown") for r in group))
        lines += [
            f"## {label + ': ' if label else ''}commit {commits}, {first.get('date', 'unknown date')}, "
            f"{first.get('cpu', 'unknown CPU')}",
            "",
        ]
        lines += [f"{len(group)} run(s); mean ± sample sd over them:", ""]
        lines += [f"- {header(r['provenance'])}" for r in group]
        lines += ["", *table(group), ""]
    return "\n".join(lines)
