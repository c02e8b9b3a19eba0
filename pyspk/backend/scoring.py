"""The scoring stage: every ``trials*`` list of a data dir against every back-end.

Writes ``<out>/<trials_name>.<backend>`` (``enroll test score`` lines, trials order),
a copy of each trials list as ``<out>/<trials_name>`` (the key, for reports and DET plots),
``metrics.json``::

    {"<trials_name>": {"<backend>": {"eer": f, "eer_threshold": f, "min_dcf_0.01": f,
        "min_dcf_0.01_threshold": f, "min_dcf_0.001": f, ..., "num_trials": n,
        "num_targets": n, "cllr": f (calibrated scores; when calibration is on)}}}

``thresholds.json`` (``{"trials": name, "<backend>": EER threshold}``, from the
calibration list, default the first; ``pyspk verify`` decides at these) and, with
calibration on, ``calibration.json`` (``{"trials": name, "<backend>": {"a", "b"}}``).
Enrolment ids may be utterances (``xvector.scp``) or speakers (``spk_xvector.scp``,
enrolled with ``num_utts.ark`` counts); test ids are utterances.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from pyspk.backend.calibration import LinearCalibration, cllr
from pyspk.backend.model import Backend
from pyspk.data.kaldi_dir import read_trials
from pyspk.data.xvectors import read_num_utts, read_vectors, stack
from pyspk.io import atomic_open, atomic_write_text
from pyspk.metrics import compute_metrics

log = logging.getLogger(__name__)


class EmbeddingTables:
    """Utterance and speaker embeddings of an x-vector dir, as arrays + id -> row maps."""

    def __init__(self, xvector_dir):
        d = Path(xvector_dir)
        self.dir = d
        self.utt_ids, self.utt_vecs = stack(read_vectors(d / "xvector.scp"))
        self.utt_row = {u: i for i, u in enumerate(self.utt_ids)}
        self.spk_ids, self.spk_vecs, self.spk_counts = [], self.utt_vecs[:0], np.zeros(0)
        if (d / "spk_xvector.scp").is_file():
            self.spk_ids, self.spk_vecs = stack(read_vectors(d / "spk_xvector.scp"))
            counts = read_num_utts(d / "num_utts.ark") if (d / "num_utts.ark").is_file() else {}
            self.spk_counts = np.array([counts.get(s, 1) for s in self.spk_ids], dtype=np.float64)
        self.spk_row = {s: i for i, s in enumerate(self.spk_ids)}

    def enroll_table(self):
        """(vectors, counts, id -> row): utterances first (n=1), then speakers."""
        vecs = np.concatenate([self.utt_vecs, self.spk_vecs]) if len(self.spk_ids) else self.utt_vecs
        counts = np.concatenate([np.ones(len(self.utt_ids)), self.spk_counts])
        row = dict(self.spk_row)
        row = {s: len(self.utt_ids) + i for s, i in row.items()}
        row.update(self.utt_row)  # an id that is both names the utterance
        return vecs, counts, row


def trial_indices(trials_path, trials, enroll_row: Dict[str, int], test_row: Dict[str, int], xvector_dir):
    """Index arrays for the trials; an id without an embedding is an error naming the line."""
    ei = np.empty(len(trials), dtype=np.int64)
    ti = np.empty(len(trials), dtype=np.int64)
    for k, tr in enumerate(trials):
        e, t = enroll_row.get(tr.enroll), test_row.get(tr.test)
        if e is None or t is None:
            lineno, text = _find_line(trials_path, tr.enroll, tr.test)
            what = (
                (
                    f"enrolment id '{tr.enroll}' has no embedding (neither an utterance of xvector.scp "
                    f"nor a speaker of spk_xvector.scp)"
                )
                if e is None
                else f"test utterance '{tr.test}' has no embedding in xvector.scp"
            )
            raise KeyError(f"{trials_path}:{lineno}: {text!r}: {what} in {xvector_dir}")
        ei[k], ti[k] = e, t
    return ei, ti


def _find_line(path, enroll, test):
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.split()[:2] == [enroll, test]:
            return lineno, line.strip()
    return 0, f"{enroll} {test}"


def metrics_of(scores, labels, p_targets: Sequence[float]) -> dict:
    out = compute_metrics(scores, labels, p_targets)
    out["num_trials"], out["num_targets"] = int(len(labels)), int(np.sum(labels))
    return out


def write_scores(path, trials, scores) -> None:
    with atomic_open(path) as f:
        f.writelines(f"{tr.enroll} {tr.test} {s:.6f}\n" for tr, s in zip(trials, scores))


def trials_files(data_dir) -> List[Path]:
    files = sorted(p for p in Path(data_dir).glob("trials*") if p.is_file() and not p.name.endswith("~"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no trials* file to score")
    return files


def score_data_dir(backend: Backend, xvector_dir, data_dir, out_dir, backends: Optional[Sequence[str]] = None) -> dict:
    """Score every trials list of ``data_dir`` with ``backends`` (default: every fitted one);
    returns the metrics dict written to metrics.json."""
    backends = backend.names if backends is None else list(backends)
    for name in backends:
        backend.scorer(name)  # unknown or not fitted: one line, before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = EmbeddingTables(xvector_dir)
    enroll_vecs, enroll_counts, enroll_row = tables.enroll_table()
    cfg = backend.config
    lists = trials_files(data_dir)
    cal_name = cfg.calibration_trials or lists[0].name
    if cal_name not in [p.name for p in lists]:
        raise ValueError(f"calibration_trials '{cal_name}' is not a trials file of {data_dir}")
    lists.sort(key=lambda p: p.name != cal_name)  # the calibration list first
    metrics, thresholds, calib = {}, {"trials": cal_name}, {"trials": cal_name}
    # Every list is read and checked before any score is written, so a bad one leaves no
    # partial output under a final name.
    read = {}
    for path in lists:
        trials = read_trials(path)
        n_tgt = sum(tr.target for tr in trials)
        if n_tgt in (0, len(trials)):
            kind = "target" if n_tgt else "nontarget"
            raise ValueError(
                f"{path}: all {len(trials)} trials are {kind} trials; EER and minDCF need both "
                f"target and nontarget trials (nothing was scored)"
            )
        read[path] = (trials, trial_indices(path, trials, enroll_row, tables.utt_row, xvector_dir))
    for path in lists:
        trials, (ei, ti) = read[path]
        labels = np.array([tr.target for tr in trials])
        metrics[path.name] = {}
        copy_trials(path, out)
        for name in backends:
            scores = backend.score_trials(name, enroll_vecs, tables.utt_vecs, ei, ti, n_enroll=enroll_counts)
            write_scores(out / f"{path.name}.{name}", trials, scores)
            m = metrics_of(scores, labels, cfg.p_targets)
            if cfg.calibration:
                if path.name == cal_name:
                    calib[name] = LinearCalibration().fit(scores, labels).to_dict()
                c = calib[name]
                m["cllr"] = cllr(c["a"] * np.asarray(scores, np.float64) + c["b"], labels)
                m["cllr_self_calibrated"] = path.name == cal_name
            if path.name == cal_name:
                thresholds[name] = m["eer_threshold"]
            metrics[path.name][name] = m
            log.info(
                "%s %s: EER %.2f%% minDCF(0.01) %.4f",
                path.name,
                name,
                100 * m["eer"],
                m.get("min_dcf_0.01", float("nan")),
            )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / "thresholds.json", json.dumps(thresholds, indent=2) + "\n")
    if cfg.calibration:
        atomic_write_text(out / "calibration.json", json.dumps(calib, indent=2) + "\n")
    return metrics


def copy_trials(path, out_dir) -> None:
    """Keep the scored key beside the scores (``S/<trials_name>``) for reports and DET plots."""
    atomic_write_text(Path(out_dir) / Path(path).name, Path(path).read_text())
