"""Corpus preparation (local/prepare_*.py, local/prepare_corpus.sh, local/download_*.sh).

Every test builds a small fake copy of an official layout in tmp_path (a few speakers
of 0.2 s generated clips, trial lists in the official formats) and checks the data dirs,
the trial counts and target/non-target balance, and the errors on bad input.
Nothing here reads /work/shared or the network.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "local"))

import corpus_common  # noqa: E402
import prepare_cnceleb  # noqa: E402
import prepare_folder  # noqa: E402
import prepare_speechocean762  # noqa: E402
import prepare_voxceleb1  # noqa: E402
import prepare_voxceleb2  # noqa: E402
from corpus_common import CorpusError, make_trials  # noqa: E402

from pyspk.data.kaldi_dir import read_table, read_trials, validate_data_dir  # noqa: E402


def clip(path: Path, seed: int, dur: float = 0.2, sr: int = 16000) -> Path:
    """A short sine + noise clip written with soundfile (format from the suffix)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (100 + 20 * (seed % 17)) * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    sf.write(str(path), x.astype(np.float32), sr, format=fmt, subtype="PCM_16")
    return path


def labels(trials):
    n_t = sum(t.target for t in trials)
    return n_t, len(trials) - n_t


# ---------------------------------------------------------------- trial generator
def test_make_trials_counts_balance_and_seed():
    utt2spk = {f"s{s}-u{u}": f"s{s}" for s in range(5) for u in range(4 + s)}
    trials = make_trials(utt2spk, seed=3)
    n_target = sum((4 + s) * (3 + s) // 2 for s in range(5))
    tgt = [t for t in trials if t[2]]
    non = [t for t in trials if not t[2]]
    assert len(tgt) == n_target and len(non) == n_target
    assert all(utt2spk[a] == utt2spk[b] for a, b, _ in tgt)
    assert all(utt2spk[a] != utt2spk[b] for a, b, _ in non)
    assert len({(a, b) for a, b, _ in trials}) == len(trials)
    assert all(a.encode() < b.encode() for a, b, _ in trials)
    assert make_trials(utt2spk, seed=3) == trials
    assert make_trials(utt2spk, seed=4) != trials
    capped = make_trials(utt2spk, seed=3, nontarget_ratio=2.0, max_target=10)
    assert sum(t[2] for t in capped) == 10 and sum(not t[2] for t in capped) == 20


def test_make_trials_takes_all_nontargets_when_few():
    utt2spk = {"a1": "a", "a2": "a", "a3": "a", "b1": "b"}
    trials = make_trials(utt2spk, seed=0, nontarget_ratio=5.0)
    assert sum(t[2] for t in trials) == 3 and sum(not t[2] for t in trials) == 3


def test_split_speakers_alternates_strata():
    spk = [f"{i:04d}" for i in range(12)]
    gender = {s: "f" if i % 3 else "m" for i, s in enumerate(spk)}
    train, test = corpus_common.split_speakers(spk, 4, seed=1, strata=gender)
    assert len(test) == 4 and not set(train) & set(test) and len(train) + len(test) == 12
    assert sorted(gender[s] for s in test) == ["f", "f", "m", "m"]
    assert corpus_common.split_speakers(spk, 4, seed=1, strata=gender) == (train, test)


# ---------------------------------------------------------------- speechocean762
def fake_so762(root: Path, halves=("train", "test"), n_spk=4, n_utt=3, ext=".WAV", listed_ext=".WAV"):
    genders = "mf"
    for h, half in enumerate(halves):
        d = root / half
        d.mkdir(parents=True)
        wav, u2s, s2g = [], [], []
        for s in range(n_spk):
            spk = f"{h * 100 + s + 1:04d}"
            s2g.append(f"{spk}\t{genders[s % 2]}")
            for u in range(n_utt):
                utt = f"0{spk}{u:04d}"
                clip(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}{ext}", seed=int(utt))
                wav.append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}{listed_ext}")
                u2s.append(f"{utt}\t{spk}")
        (d / "wav.scp").write_text("\n".join(wav) + "\n")
        (d / "utt2spk").write_text("\n".join(u2s) + "\n")
        (d / "spk2gender").write_text("\n".join(s2g) + "\n")
    return root


def test_speechocean762_official_layout(tmp_path):
    root = fake_so762(tmp_path / "so", ext=".flac", listed_ext=".WAV")  # listed .WAV, shipped .flac
    tr, te = tmp_path / "data/so762_train", tmp_path / "data/so762_test"
    assert prepare_speechocean762.main(["--root", str(root), "--train-dir", str(tr), "--test-dir", str(te)]) == 0
    assert validate_data_dir(tr)["speakers"] == 4 and validate_data_dir(te)["utts"] == 12
    assert set(read_table(tr / "utt2spk").values()).isdisjoint(read_table(te / "utt2spk").values())
    trials = read_trials(te / "trials")
    assert labels(trials) == (4 * 3, 4 * 3)
    assert read_table(te / "spk2gender")["0101"] == "m"
    fem = read_trials(te / "trials_female")
    g = read_table(te / "spk2gender")
    u2s = read_table(te / "utt2spk")
    assert fem and all(g[u2s[t.enroll]] == "f" == g[u2s[t.test]] for t in fem)
    # written once and kept: a rerun leaves an existing trials file as it is
    (te / "trials").write_text(
        "".join(f"{t.enroll} {t.test} {'target' if t.target else 'nontarget'}\n" for t in trials[:5])
    )
    assert (
        prepare_speechocean762.main(["--root", str(root), "--train-dir", str(tr), "--test-dir", str(te), "--seed", "9"])
        == 0
    )
    assert len(read_trials(te / "trials")) == 5


def test_speechocean762_split_train_half(tmp_path):
    root = fake_so762(tmp_path / "so", halves=("train",), n_spk=8)
    tr, te = tmp_path / "tr", tmp_path / "te"
    prepare_speechocean762.main(
        [
            "--root",
            str(root),
            "--train-dir",
            str(tr),
            "--test-dir",
            str(te),
            "--split-train-speakers",
            "4",
            "--seed",
            "5",
        ]
    )
    test_spk = set(read_table(te / "spk2utt"))
    assert len(test_spk) == 4 and len(read_table(tr / "spk2utt")) == 4
    assert sorted(read_table(te / "spk2gender").values()) == ["f", "f", "m", "m"]
    assert labels(read_trials(te / "trials")) == (12, 12)
    with pytest.raises(CorpusError, match="test"):  # no test/ half without the split option
        prepare_speechocean762.main(["--root", str(root), "--train-dir", str(tr), "--test-dir", str(tmp_path / "x")])


def test_speechocean762_missing_audio_listed_then_skipped(tmp_path):
    root = fake_so762(tmp_path / "so")
    gone = sorted((root / "WAVE" / "SPEAKER0101").iterdir())[:2]
    for f in gone:
        f.unlink()
    args = ["--root", str(root), "--train-dir", str(tmp_path / "tr"), "--test-dir", str(tmp_path / "te")]
    with pytest.raises(CorpusError) as e:
        prepare_speechocean762.main(args)
    assert all(f.stem in str(e.value) for f in gone) and "--skip-missing" in str(e.value)
    prepare_speechocean762.main(args + ["--skip-missing"])
    assert validate_data_dir(tmp_path / "te")["utts"] == 10


# ---------------------------------------------------------------- VoxCeleb1 / VoxCeleb2
VOX_TEST = ["id10270", "id10271", "id10300"]
VOX_DEV = ["id10001", "id10002"]


def fake_vox1(root: Path, with_e=True):
    files = {}
    for i, spk in enumerate(VOX_TEST + VOX_DEV):
        for v, vid in enumerate(["x6uYqmx31kE", "ab-c_D9"]):
            for n in (1, 2):
                rel = f"{spk}/{vid}/{n:05d}.wav"
                sub = "vox1_test_wav/wav" if spk in VOX_TEST else "vox1_dev_wav/wav"
                files[rel] = clip(root / sub / rel, seed=i * 10 + v * 3 + n)
    test = [r for r in files if r.split("/")[0] in VOX_TEST]
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}" for a, b in itertools.combinations(test, 2)]
    (root / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    if with_e:
        (root / "meta").mkdir()
        every = sorted(files)
        e_lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}" for a, b in zip(every, every[1:])]
        (root / "meta" / "list_test_all2.txt").write_text("\n".join(e_lines) + "\n")
    return root, lines


def test_voxceleb1_dev_and_vox1_o_trials(tmp_path):
    root, lines = fake_vox1(tmp_path / "vox1")
    dev, test = tmp_path / "voxceleb1_dev", tmp_path / "voxceleb1_test"
    assert prepare_voxceleb1.main(["--root", str(root), "--dev-dir", str(dev), "--test-dir", str(test)]) == 0
    assert sorted(read_table(dev / "spk2utt")) == VOX_DEV
    assert validate_data_dir(dev)["utts"] == 8
    trials = read_trials(test / "trials_vox1_o")
    assert len(trials) == len(lines) == 66
    assert labels(trials) == (sum(l.startswith("1") for l in lines), sum(l.startswith("0") for l in lines))
    assert trials[0].enroll == "id10270-x6uYqmx31kE-00001" and trials[0].enroll in read_table(test / "wav.scp")
    assert not (test / "trials_vox1_e").exists()  # E/H only when asked for (they reuse dev speakers)


def test_voxceleb1_e_h_lists_when_present(tmp_path):
    root, _ = fake_vox1(tmp_path / "vox1")
    test = tmp_path / "voxceleb1_test"
    prepare_voxceleb1.main(["--root", str(root), "--test-dir", str(test), "--test-only", "--trial-lists", "o,e,h"])
    assert len(read_trials(test / "trials_vox1_e")) == 19
    assert not (test / "trials_vox1_h").exists()  # list_test_hard2.txt absent: skipped
    assert validate_data_dir(test)["speakers"] == 5  # Vox1-E spans dev speakers too


def test_voxceleb1_missing_list_and_missing_audio(tmp_path):
    root, lines = fake_vox1(tmp_path / "vox1", with_e=False)
    args = ["--root", str(root), "--dev-dir", str(tmp_path / "d"), "--test-dir", str(tmp_path / "t")]
    (root / "veri_test2.txt").rename(root / "elsewhere.txt")
    with pytest.raises(CorpusError, match=r"veri_test2\.txt \(Vox1-O\) not found; looked for:\n.*vox1/veri_test2\.txt"):
        prepare_voxceleb1.main(args)
    (root / "elsewhere.txt").rename(root / "veri_test2.txt")
    gone = ["id10300/x6uYqmx31kE/00001.wav", "id10271/ab-c_D9/00002.wav"]
    for rel in gone:
        (root / "vox1_test_wav/wav" / rel).unlink()
    with pytest.raises(CorpusError) as e:
        prepare_voxceleb1.main(args)
    msg = str(e.value)
    n_bad = sum(any(g in l for g in gone) for l in lines)
    assert all(g in msg for g in gone) and f"{n_bad} of {len(lines)} line(s)" in msg
    assert prepare_voxceleb1.main(args + ["--skip-missing"]) == 0
    assert len(read_trials(tmp_path / "t" / "trials_vox1_o")) == len(lines) - n_bad


def test_voxceleb2_m4a_pipes_wav_tree_and_no_ffmpeg(tmp_path):
    root = tmp_path / "vox2"
    for spk, vid, n in itertools.product(["id00012", "id00015"], ["21Uxsk56VDQ"], [1, 2]):
        f = root / "dev/aac" / spk / vid / f"{n:05d}.m4a"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"not decoded here")
    out = tmp_path / "voxceleb2_dev"
    with pytest.raises(CorpusError, match="ffmpeg"):
        prepare_voxceleb2.main(["--root", str(root), "--train-dir", str(out), "--ffmpeg", str(tmp_path / "no-ffmpeg")])
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    prepare_voxceleb2.main(["--root", str(root), "--train-dir", str(out), "--ffmpeg", str(fake)])
    wav = read_table(out / "wav.scp")
    assert len(wav) == 4 and all(v.startswith(str(fake)) and v.endswith("|") and ".m4a" in v for v in wav.values())
    clip(root / "dev/wav/id00012/21Uxsk56VDQ/00001.wav", 1)  # a converted tree wins
    prepare_voxceleb2.main(["--root", str(root), "--train-dir", str(out)])
    assert list(read_table(out / "wav.scp").values())[0].endswith("00001.wav")


# ---------------------------------------------------------------- CN-Celeb
def fake_cnceleb(root: Path, dur: float = 0.2):
    cn1 = root / "CN-Celeb_flac"
    dev = ["id00000", "id00001"]
    for s, spk in enumerate(dev):
        for g, genre in enumerate(["singing", "interview"]):
            for n in (1, 2, 3):
                clip(cn1 / "data" / spk / f"{genre}-01-{n:03d}.flac", seed=s * 50 + g * 5 + n, dur=dur)
    (cn1 / "dev").mkdir(parents=True)
    (cn1 / "dev/dev.lst").write_text("\n".join(dev) + "\n")
    ev, enroll_map, enroll_lst, trials = ["id00800", "id00801"], [], [], []
    for s, spk in enumerate(ev):
        segs = [f"{spk}/speech-01-{n:03d}.wav" for n in (1, 2)]  # lists name .wav, files are .flac
        for k, seg in enumerate(segs):
            clip(cn1 / "data" / seg.replace(".wav", ".flac"), seed=700 + s * 9 + k)
        clip(cn1 / "eval/enroll" / f"{spk}-enroll.flac", seed=800 + s)
        enroll_map.append(f"{spk}-enroll " + " ".join(segs))
        enroll_lst.append(f"{spk}-enroll enroll/{spk}-enroll.wav")
        for n in (1, 2):
            clip(cn1 / "eval/test" / f"{spk}-vlog-02-{n:03d}.flac", seed=900 + s * 7 + n)
    for e, t, n in itertools.product(ev, ev, (1, 2)):
        trials.append(f"{e}-enroll test/{t}-vlog-02-{n:03d}.wav {int(e == t)}")
    lists = cn1 / "eval/lists"
    lists.mkdir(parents=True)
    (lists / "enroll.map").write_text("\n".join(enroll_map) + "\n")
    (lists / "enroll.lst").write_text("\n".join(enroll_lst) + "\n")
    (lists / "trials.lst").write_text("\n".join(trials) + "\n")
    cn2 = root / "CN-Celeb2_flac"
    for n in (1, 2):
        clip(cn2 / "data/id10001" / f"drama-03-{n:03d}.flac", seed=990 + n, dur=dur)
    (cn2 / "spk.lst").write_text("id10001\n")
    return root, trials


def test_cnceleb_train_eval_and_both_enrolments(tmp_path):
    root, lines = fake_cnceleb(tmp_path / "cn")
    tr, ev = tmp_path / "cnceleb_train", tmp_path / "cnceleb1_eval"
    assert prepare_cnceleb.main(["--root", str(root), "--train-dir", str(tr), "--eval-dir", str(ev)]) == 0
    assert sorted(read_table(tr / "spk2utt")) == ["id00000", "id00001", "id10001"]
    genre = read_table(tr / "utt2genre")
    assert genre["id00000-singing-01-001"] == "singing" and genre["id10001-drama-03-002"] == "drama"
    trials = read_trials(ev / "trials")
    assert len(trials) == len(lines) == 8 and labels(trials) == (4, 4)
    assert trials[0].enroll == "id00800-enroll" and read_table(ev / "utt2spk")["id00800-enroll"] == "id00800"
    avg = read_trials(ev / "trials_avg")
    assert [t.test for t in avg] == [t.test for t in trials] and avg[0].enroll == "enroll-id00800"
    spk2utt = read_table(ev / "spk2utt")
    assert spk2utt["enroll-id00800"].split() == ["enroll-id00800-speech-01-001", "enroll-id00800-speech-01-002"]
    assert read_table(ev / "utt2genre")["id00801-vlog-02-002"] == "vlog"
    assert read_table(ev / "utt2genre")["id00800-enroll"] == "speech"
    assert validate_data_dir(ev)["trials"] == 16


def test_cnceleb_dev_speaker_without_audio(tmp_path):
    root, _ = fake_cnceleb(tmp_path / "cn")
    (root / "CN-Celeb_flac/dev/dev.lst").write_text("id00000\nid00001\nid00042\n")
    args = ["--root", str(root), "--train-dir", str(tmp_path / "tr"), "--eval-dir", str(tmp_path / "ev")]
    with pytest.raises(CorpusError, match=r"id00042 \(looked for .*CN-Celeb_flac/data/id00042"):
        prepare_cnceleb.main(args)
    prepare_cnceleb.main(args + ["--skip-missing"])
    assert "id00042" not in read_table(tmp_path / "tr" / "spk2utt")


def test_cnceleb_missing_trial_audio_and_merging(tmp_path):
    root, lines = fake_cnceleb(tmp_path / "cn", dur=0.2)
    (root / "CN-Celeb_flac/eval/test/id00801-vlog-02-001.flac").unlink()
    args = [
        "--root",
        str(root),
        "--train-dir",
        str(tmp_path / "tr"),
        "--eval-dir",
        str(tmp_path / "ev"),
        "--min-duration",
        "0.5",
    ]
    with pytest.raises(CorpusError, match=r"2 of 8 line\(s\) reference 1 absent"):
        prepare_cnceleb.main(args)
    prepare_cnceleb.main(args + ["--skip-missing"])
    assert len(read_trials(tmp_path / "ev" / "trials")) == 6
    # 3 x 0.2 s segments per speaker and genre -> one merged 0.6 s utterance; CN2's 2 x 0.2 s too
    wav = read_table(tmp_path / "tr" / "wav.scp")
    assert len(wav) == 5 and "id00000-singing-merged0000" in wav
    x, sr = sf.read(wav["id00000-singing-merged0000"])
    assert len(x) == 3 * int(0.2 * sr)


# ---------------------------------------------------------------- folder per speaker
def fake_folder(root: Path, n_spk=6, n_utt=3):
    for s in range(n_spk):
        for u in range(n_utt):
            ext = ".flac" if u % 2 else ".wav"
            clip(root / f"speaker {s}" / f"day{u % 2}" / f"rec{u}{ext}", seed=s * 10 + u)
    (root / "notes.txt").write_text("not a speaker")
    return root


def test_folder_split_trials_and_all_test(tmp_path):
    root = fake_folder(tmp_path / "f")
    tr, te = tmp_path / "folder_train", tmp_path / "folder_test"
    prepare_folder.main(
        ["--root", str(root), "--train-dir", str(tr), "--test-dir", str(te), "--num-test-speakers", "2", "--seed", "1"]
    )
    assert len(read_table(tr / "spk2utt")) == 4 and len(read_table(te / "spk2utt")) == 2
    assert "speaker_0-day1-rec1" in read_table(tr / "utt2spk") or "speaker_0-day1-rec1" in read_table(te / "utt2spk")
    assert labels(read_trials(te / "trials")) == (6, 6)
    te2 = tmp_path / "all"
    prepare_folder.main(["--root", str(root), "--test-dir", str(te2), "--all-test", "--seed", "1"])
    assert labels(read_trials(te2 / "trials")) == (18, 18) and validate_data_dir(te2)["speakers"] == 6


# ---------------------------------------------------------------- stage-0 dispatcher
def run_sh(*args, cwd=REPO):
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_dispatcher_requires_root_and_splits_so762(tmp_path):
    r = run_sh(
        "local/prepare_corpus.sh", "--corpus", "voxceleb1", "--data", str(tmp_path / "d"), "--voxceleb1-root", ""
    )
    assert r.returncode != 0 and "--voxceleb1-root is required for --corpus voxceleb1" in r.stderr
    root = fake_so762(tmp_path / "so", halves=("train",), n_spk=6)
    r = run_sh(
        "local/prepare_corpus.sh",
        "--corpus",
        "speechocean762",
        "--data",
        str(tmp_path / "d"),
        "--seed",
        "3",
        "--speechocean762-root",
        str(root),
        "--so762-eval-speakers",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "no test/ half" in r.stderr
    assert validate_data_dir(tmp_path / "d/so762_test")["speakers"] == 2
    assert validate_data_dir(tmp_path / "d/so762_train")["speakers"] == 4


# ---------------------------------------------------------------- download scripts (no internet)
def make_tar(tmp_path: Path, top: str, inner: str) -> Path:
    import tarfile

    src = tmp_path / "src"
    clip(src / top / inner, 1)
    archive = tmp_path / "served" / f"{top}.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / top, arcname=top)
    return archive


def test_download_unreachable_host_says_so(tmp_path):
    r = run_sh("local/download_musan.sh", "--dir", str(tmp_path / "dl"), "--url", "http://127.0.0.1:9/musan.tar.gz")
    assert r.returncode != 0
    assert "no network, or the host is unreachable" in r.stderr and "musan.tar.gz" in r.stderr
    assert not (tmp_path / "dl" / "musan.tar.gz").exists()


def test_download_checksum_unpack_and_resume(tmp_path):
    import hashlib

    archive = make_tar(tmp_path, "musan", "noise/free-sound/noise-0000.wav")
    url = archive.as_uri()
    dl = tmp_path / "dl"
    r = run_sh("local/download_musan.sh", "--dir", str(dl), "--url", url, "--md5", "0" * 32)
    assert r.returncode != 0 and "expected 00000000" in r.stderr and "Delete it and rerun" in r.stderr
    (dl / "musan.tar.gz").unlink()
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    r = run_sh("local/download_musan.sh", "--dir", str(dl), "--url", url, "--md5", md5)
    assert r.returncode == 0, r.stderr
    assert (dl / "musan/noise/free-sound/noise-0000.wav").is_file() and (dl / ".unpacked.musan.tar.gz").is_file()
    r = run_sh("local/download_musan.sh", "--dir", str(dl), "--url", "http://127.0.0.1:9/x", "--md5", md5)
    assert r.returncode == 0 and "ready" in r.stdout  # finished unpack: nothing fetched again


def test_download_speechocean762_records_first_checksum(tmp_path):
    import hashlib

    archive = make_tar(tmp_path, "speechocean762", "WAVE/SPEAKER0001/000010011.WAV")
    dl = tmp_path / "dl"
    r = run_sh("local/download_speechocean762.sh", "--dir", str(dl), "--url", archive.as_uri())
    assert r.returncode == 0, r.stderr
    rec = (dl / "speechocean762.tar.gz.sha256").read_text().split()[0]
    assert rec == hashlib.sha256(archive.read_bytes()).hexdigest() and "no published checksum" in r.stderr
    assert (dl / "speechocean762/WAVE/SPEAKER0001/000010011.WAV").is_file()


def test_download_voxceleb_needs_local_archives(tmp_path):
    r = run_sh("local/download_voxceleb.sh", "--dir", str(tmp_path / "v"))
    assert r.returncode != 0 and "--src is required" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_sh("local/download_voxceleb.sh", "--src", str(tmp_path / "empty"), "--dir", str(tmp_path / "v"))
    assert r.returncode != 0 and "no VoxCeleb archive" in r.stderr
    r = run_sh("local/download_cnceleb.sh", "--src", str(tmp_path / "empty"), "--dir", str(tmp_path / "c"))
    assert r.returncode != 0 and "cn-celeb_v2.tar.gz not found" in r.stderr


# ---------------------------------------------------------------- recipe configs
@pytest.mark.parametrize("corpus", ["speechocean762", "voxceleb1", "voxceleb2", "cnceleb", "folder"])
def test_corpus_configs_load_with_the_trainer_schema(corpus):
    config = pytest.importorskip("pyspk.train.config")
    names = [
        l.strip()
        for l in (REPO / "conf" / corpus / "systems.list").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    assert names == ["softmax", "aam", "supcon", "am_supcon", "am_supcon_caa", "aam_am_supcon_caa_fixed", "proposed"]
    cfgs = {n: config.load_config(REPO / "conf" / corpus / f"{n}.yaml") for n in names}
    p = cfgs["proposed"]
    assert (p.head.name, p.pair_loss.name, p.pair_weights.name, p.balance.name) == ("aam", "am_supcon", "caa", "mgda")
    # every corpus: the additive margin of the authors' later code, m = 0.1 (docs/method.md, 'What the recipes ship, and why')
    assert (p.head.margin, p.head.scale, p.pair_loss.temperature, p.pair_loss.margin) == (0.2, 32.0, 0.07, 0.1)
    assert (p.pair_loss.margin_type, p.pair_loss.margin_on, p.balance.combine) == ("additive", "positives", "raw")
    # the balancing the loss study picked per corpus: MGDA on the encoder's parameters where it won
    # (speechocean762), MGDA-UB on unit gradients (the plain sum) elsewhere
    if corpus == "speechocean762":
        assert (p.balance.level, p.balance.normalize) == ("parameters", "none")
    else:
        assert (p.balance.level, p.balance.normalize) == ("embeddings", "l2")
    assert p.pair_loss.margin_schedule.warmup_epochs > 0 and p.pair_weights.normalize
    assert cfgs["aam_am_supcon_caa_fixed"].balance.name == "fixed"
    assert cfgs["am_supcon_caa"].pair_weights.prototypes == "ema" and cfgs["supcon"].pair_loss.name == "supcon"
    assert p.features.crop_frames == 200
    if corpus in ("voxceleb1", "voxceleb2", "cnceleb"):  # the paper's ECAPA-TDNN
        assert p.encoder.name == "ecapa_tdnn" and p.encoder.kwargs == {"channels": 1024, "embed_dim": 192}
    # the rows differ only in the objective's blocks: same model, data, budget
    shared = [
        {k: v for k, v in config.config_to_dict(c).items() if k not in config.OBJECTIVE_BLOCKS} for c in cfgs.values()
    ]
    assert all(d == shared[0] for d in shared)
