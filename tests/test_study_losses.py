"""The loss study's bookkeeping (studies/study_losses.py): every variant resolves against the
trainer's schema, and a run recorded before a config key existed is compared with the key's
old value, so it is reused only when it trained like the variant asks."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("study_losses", REPO / "studies" / "study_losses.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["study_losses"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_variant_resolves_for_its_corpora(study, tmp_path):
    names = [v.name for v in study.variants()]
    assert len(names) == len(set(names)), "variant names must be unique"
    for corpus in ("synth", "speechocean762"):  # fixed.tuned reads its lambda from the study's output
        (tmp_path / corpus).mkdir()
        (tmp_path / corpus / "tuned_lambda.json").write_text('{"lambda": 2.0}')
    for v in study.variants():
        corpora = ["speechocean762"] if v.group == "ecapa" else ["synth", "speechocean762"]
        for corpus in corpora:
            if (REPO / "conf" / corpus / f"{v.base}.yaml").is_file():
                study.resolved_config(corpus, v, threads=1, out=tmp_path)  # raises on a misspelled key
    rows = [v for v in study.variants() if v.group == "rows"]
    assert [v.name for v in rows] == list(study.ROWS) and all(not v.overrides for v in rows)


def _old_layout(resolved: dict) -> dict:
    """A resolved config as the trainer recorded it before the objective's blocks: one flat
    ``loss:`` block and ``balance.kind`` (pyspk/train/migrate.py's renames, read backwards)."""
    from pyspk.train.migrate import RENAMES

    d = {k: v for k, v in resolved.items() if k not in ("head", "pair_loss", "pair_weights", "balance")}
    loss = {"cls": "none", "con": "none", "caa": False}
    bal = {"kind": "none"}
    for (sec, old), (block, new) in RENAMES.items():
        value = (resolved.get(block) or {}).get(new)
        if value is None:
            continue
        if old == "caa":
            value = True
        (loss if sec == "loss" else bal)[old] = value
    return {**d, "loss": loss, "balance": bal}


def test_a_run_older_than_the_combine_key_counts_as_scaled(study):
    by = {v.name: v for v in study.variants()}
    shipped = study._resolved(study.resolved_config("synth", by["proposed"], None))
    scaled = study._resolved(study.resolved_config("synth", by["proposed.scaled_l2"], None))
    old = _old_layout(scaled)
    assert study.semantic(old) == study.semantic(scaled)  # a run recorded in the old layout
    del old["balance"]["combine"]  # recorded before the key existed
    assert study.semantic(old) == study.semantic(scaled)
    assert study.semantic(old) != study.semantic(shipped)
    # without normalisation the scales are 1: raw and scaled train alike
    none_raw = study._resolved(study.resolved_config("synth", by["proposed.angular"], None))
    none_old = _old_layout(none_raw)
    del none_old["balance"]["combine"]
    assert study.semantic(none_old) == study.semantic(none_raw)
    # a run recorded before pair_weights.positives (caa_positives) existed weighted negatives only
    nopos = study._resolved(study.resolved_config("synth", by["proposed.nocaapos"], None))
    old = _old_layout(nopos)
    del old["loss"]["caa_positives"]
    assert study.semantic(old) == study.semantic(nopos) != study.semantic(scaled)


def test_a_failed_training_resumes_and_another_system_restarts(study, tmp_path):
    """A system's training that died (a full disk, a kill) resumes from its own checkpoints
    on the rerun; checkpoints left by a different key are never resumed."""
    started = tmp_path / ".study.train.started"
    assert study.restart_args(started, "k1") == ["--restart"]  # nothing recorded: start clean
    assert study.restart_args(started, "k1") == []  # the same system again: resume
    assert study.restart_args(started, "k2") == ["--restart"]  # another config or seed
    assert study.restart_args(started, "k2") == []


def test_the_table_has_every_backend_run_sh_scores(study, tmp_path, monkeypatch):
    """study.md reports cosine, AS-norm and PLDA (run.sh stage 6's three); a run scored
    before AS-norm was added shows a dash there, not a number from another back-end."""
    var = next(v for v in study.variants() if v.name == "aam")
    m = lambda eer: {"eer": eer, "min_dcf_0.01": 0.5}  # noqa: E731
    res = {
        "aam": [
            {"seed": 1, "metrics": {"trials": {"cosine": m(0.10), "asnorm": m(0.08), "plda": m(0.06)}}, "train": {}},
            {"seed": 2, "metrics": {"trials": {"cosine": m(0.12), "plda": m(0.07)}}, "train": {}},
        ]
    }
    monkeypatch.setattr(study, "collect", lambda *a, **k: res)
    text = study.write_table("synth", [var], [1, 2], tmp_path, "cmd").read_text()
    head = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert "trials cos EER" in head and "trials AS-norm EER" in head and "trials PLDA EER" in head
    row = next(line for line in text.splitlines() if line.startswith("| aam |")).split(" | ")
    assert row[2:7:2] == ["11.00 ± 1.41", "8.00", "6.50 ± 0.71"]  # EER % per back-end


def _fake_study(study, tmp_path, monkeypatch) -> list:
    """A one-utterance speechocean762 tree under tmp_path (the study's ROOT), and a ``_run`` that
    records each command and, for a training, writes final.pt and the config as the trainer
    records it (resolved). Returns the list the commands go to."""
    data = tmp_path / "data_so762"
    for d, spk in (("so762_train", "a"), ("so762_train_combined", "b"), ("so762_test", "c")):
        (data / d).mkdir(parents=True)
        (data / d / "utt2spk").write_text(f"u1 {spk}\n")
    (data / "so762_test" / "trials").write_text("u1 u1 target\n")
    (tmp_path / "conf").symlink_to(REPO / "conf")
    monkeypatch.setattr(study, "ROOT", tmp_path)
    calls = []

    def fake_run(cmd, log, env):
        calls.append(cmd)
        if cmd[2] == "pyspk.bin.train":
            exp = Path(cmd[cmd.index("--exp-dir") + 1])
            (exp / "final.pt").write_text("model")
            config = Path(cmd[cmd.index("--config") + 1])
            resolved = study._resolved(yaml.safe_load(config.read_text()))
            (exp / "config.yaml").write_text(yaml.safe_dump(resolved))

    monkeypatch.setattr(study, "_run", fake_run)
    return calls


def test_a_backend_variant_reuses_its_parents_model(study, tmp_path, monkeypatch):
    """ecapa.long2.proposed.bk_training trains nothing: it takes the parent's final.pt and test
    x-vectors (training the parent first when it is missing), extracts its own back-end set (the
    encoder's training set, not the clean speakers) and scores with all three back-ends."""
    data = tmp_path / "data_so762"
    calls = _fake_study(study, tmp_path, monkeypatch)
    by = {v.name: v for v in study.variants()}
    child = by["ecapa.long2.proposed.bk_training"]
    exp = study.run_system("speechocean762", child, 1, tmp_path / "out", threads=2)
    parent = tmp_path / "out" / "speechocean762" / "ecapa.long2.proposed" / "s1"
    kinds = [c[2] if c[2] != "pyspk.bin.main" else c[3] for c in calls]
    assert kinds.count("pyspk.bin.train") == 1  # the parent's, once
    extracts = [c for c in calls if c[2:4] == ["pyspk.bin.main", "extract"]]
    child_ext = [c for c in extracts if str(exp) in c[-1]]
    assert [c[-2] for c in child_ext] == [str(data / "so762_train_combined")]  # its back-end set only
    assert child_ext[0][-3] == str(parent / "final.pt")
    parent_train = [c for c in extracts if c[-1] == str(parent / "xvectors_train")]
    assert parent_train and parent_train[0][-2] == str(data / "so762_train")  # the clean speakers
    score = [c for c in calls if c[2:4] == ["pyspk.bin.main", "score"] and str(exp) in c[-1]][0]
    assert score[score.index("--xvector-dir") + 1] == str(parent / "xvectors_test")
    assert score[score.index("--backends") + 1] == "cosine,asnorm,plda"
    # a rerun does nothing; the table sees the child as trained like its variant
    n = len(calls)
    study.run_system("speechocean762", child, 1, tmp_path / "out", threads=2)
    assert len(calls) == n
    want = study.semantic(study._resolved(study.resolved_config("speechocean762", child, None)))
    assert study.semantic(study.trained_as(exp)) == want


def _speaker_dirs(data: Path, n_spk=24, utts=3):
    """A clean training dir and its combined dir (clean + speed copies as new speakers, utt2orig)."""
    clean, comb = data / "so762_train", data / "so762_train_combined"
    for d in (clean, comb):
        d.mkdir(parents=True)
    u2s = {f"s{i:02d}u{j}": f"s{i:02d}" for i in range(n_spk) for j in range(utts)}
    comb_u2s = dict(u2s)
    comb_u2s.update({f"sp0.9-{u}": f"sp0.9-{s}" for u, s in u2s.items()})

    def write(d, table):
        (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(table.items())))
        (d / "wav.scp").write_text("".join(f"{u} /dev/null\n" for u in sorted(table)))
        spk = {}
        for u, s in sorted(table.items()):
            spk.setdefault(s, []).append(u)
        (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())))

    write(clean, u2s)
    write(comb, comb_u2s)
    (comb / "utt2orig").write_text("".join(f"{u} {u.removeprefix('sp0.9-')}\n" for u in sorted(comb_u2s)))
    return clean, comb, u2s


def test_development_speakers_leave_training_with_every_copy(study, tmp_path):
    data = tmp_path / "data_so762"
    clean, comb, u2s = _speaker_dirs(data)
    train_dir, backend_dir, dev_dir = study.dev_dirs(data, "so762_train", "speechocean762", comb)
    table = lambda d: dict(line.split() for line in (d / "utt2spk").read_text().splitlines())  # noqa: E731
    dev = set(table(dev_dir).values())
    assert len(dev) == study.DEV_SPEAKERS["speechocean762"]
    assert set(table(dev_dir)) == {u for u, s in u2s.items() if s in dev}  # their clean utterances
    orig = dict(line.split() for line in (comb / "utt2orig").read_text().splitlines())
    trained = table(train_dir)
    assert trained and not any(u2s[orig[u]] in dev for u in trained)  # no copy of a dev speaker
    assert len(trained) == 2 * 3 * (24 - len(dev))
    assert set(table(backend_dir).values()) == set(u2s.values()) - dev
    trials = [line.split() for line in (dev_dir / "trials").read_text().splitlines()]
    assert {t[2] for t in trials} == {"target", "nontarget"}
    assert all(a in table(dev_dir) and b in table(dev_dir) for a, b, _ in trials)
    again = study.dev_dirs(data, "so762_train", "speechocean762", comb)  # made once, the same speakers
    assert set(table(again[2]).values()) == dev


def test_the_tuned_lambda_is_picked_on_development_runs_only(study, tmp_path):
    out = tmp_path / "out"
    dev_eer = {0.25: 0.12, 0.5: 0.10, 1.0: 0.09, 2.0: 0.11, 4.0: 0.13, 8.0: 0.14, 16.0: 0.15}
    assert set(dev_eer) == set(study.LAMBDAS)

    def finish(lam, seed, eer):
        d = out / "synth" / f"dev.fixed.l{lam:g}" / f"s{seed}" / "scores"
        d.mkdir(parents=True, exist_ok=True)
        m = {"eer": eer, "min_dcf_0.01": 0.5}
        (d / "metrics.json").write_text(json.dumps({"trials": {"cosine": m, "plda": m}}))

    for lam, eer in dev_eer.items():
        finish(lam, 1, eer)
    assert study.pick_lambda("synth", [1, 2], out) is None  # seed 2 has not finished
    for lam, eer in dev_eer.items():
        finish(lam, 2, eer + (0.05 if lam == 1.0 else 0.0))  # seed 2 prefers 0.5 on the mean
    assert study.pick_lambda("synth", [1, 2], out) == 0.5
    record = json.loads((out / "synth" / "tuned_lambda.json").read_text())
    assert record["lambda"] == 0.5 and record["mean_dev_eer"]["1"] == pytest.approx(0.115)
    tuned = next(v for v in study.variants() if v.name == "fixed.tuned")
    assert study.resolved_config("synth", tuned, None, out)["balance"] == {"name": "fixed", "lambda": 0.5}
    with pytest.raises(ValueError, match="group 'lambda' first"):
        study.resolved_config("synth", tuned, None, tmp_path / "elsewhere")


def test_an_lmft_variant_fine_tunes_its_parents_model(study, tmp_path, monkeypatch):
    calls = _fake_study(study, tmp_path, monkeypatch)
    var = next(v for v in study.variants() if v.name == "lmft.aam")
    exp = study.run_system("speechocean762", var, 1, tmp_path / "out", threads=1)
    parent = tmp_path / "out" / "speechocean762" / "aam" / "s1"
    trains = [c for c in calls if c[2] == "pyspk.bin.train"]
    assert len(trains) == 2 and "--lmft" not in trains[0]
    ft = trains[1]
    assert ft[ft.index("--exp-dir") + 1] == str(exp) and ft[ft.index("--lmft-from") + 1] == str(parent)
    assert ft[ft.index("--lmft") + 1] == str(tmp_path / "conf" / "speechocean762" / "lmft.yaml")
    assert ft[ft.index("--config") + 1] == str(parent / "study_config.yaml")
    assert any(c[2:4] == ["pyspk.bin.main", "score"] and str(exp) in c[-1] for c in calls)
    n = len(calls)
    study.run_system("speechocean762", var, 1, tmp_path / "out", threads=1)
    assert len(calls) == n  # stamped: a rerun does nothing
