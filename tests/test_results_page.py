"""Results pages are written by a command from runs' results.json, headed by their provenance."""

from __future__ import annotations

import json

from pyspk.bin.results_page import main
from pyspk.provenance import cpu_class, provenance


def _run(path, commit, eer_proposed, seed):
    data = {
        "command": f"./run.sh --seed {seed}",
        "provenance": {
            "commit": commit,
            "date": "2026-12-07",
            "cpu": "2-core Test CPU (AVX2)",
            "command": f"./run.sh --seed {seed}",
        },
        "systems": {
            "proposed": {
                "metrics": {
                    "trials_en": {
                        "cosine": {"eer": eer_proposed, "min_dcf_0.01": 0.5},
                        "plda": {"eer": 0.1, "min_dcf_0.01": 0.6},
                    }
                }
            },
            "aam": {"metrics": {"trials_en": {"cosine": {"eer": 0.2}}}},
        },
    }
    path.mkdir()
    (path / "results.json").write_text(json.dumps(data))
    return path


def test_page_has_mean_sd_per_figure_and_each_runs_provenance(tmp_path):
    runs = [_run(tmp_path / f"s{i}", "abc1234", e, i) for i, e in enumerate((0.10, 0.12, 0.14), 1)]
    out = tmp_path / "page.md"
    assert main(["--title", "Results on X", "--out", str(out), *map(str, runs)]) == 0
    text = out.read_text()
    assert text.startswith("# Results on X\n")
    assert "Written by `pyspk results-page --title 'Results on X'" in text
    assert "## commit abc1234, 2026-12-07, 2-core Test CPU (AVX2)" in text
    for seed in (1, 2, 3):
        assert f"command: `./run.sh --seed {seed}`" in text
    assert "| proposed | trials_en | cosine | 12.00 ± 2.00 | 0.5000 ± 0.0000 | 3 |" in text
    assert "| aam | trials_en | cosine | 20.00 ± 0.00 | - | 3 |" in text


def test_runs_of_two_commits_get_two_tables(tmp_path):
    a = _run(tmp_path / "a", "aaaaaaa", 0.1, 1)
    b = _run(tmp_path / "b", "bbbbbbb", 0.2, 1)
    out = tmp_path / "page.md"
    assert main(["--title", "T", "--out", str(out), str(a), str(b / "results.json")]) == 0
    text = out.read_text()
    assert text.count("## commit ") == 2
    assert "| proposed | trials_en | cosine | 20.00 | 0.5000 | 1 |" in text  # one run: no sd


def test_a_file_that_is_not_a_results_json_is_named(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text('{"x": 1}')
    assert main(["--title", "T", "--out", str(tmp_path / "p.md"), str(bad)]) == 1
    assert f"{bad}: not a results.json" in capsys.readouterr().err
    assert not (tmp_path / "p.md").exists()


def test_provenance_names_commit_date_cpu_and_command(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_class(str(cpuinfo)).endswith("Some Xeon (AMX, avx512_bf16)")
    cpuinfo.write_text("model name\t: Some EPYC\nflags\t\t: fpu avx2\n")
    assert cpu_class(str(cpuinfo)).endswith("Some EPYC (AVX2)")
    rec = provenance("./run.sh")
    assert rec["command"] == "./run.sh" and len(rec["date"]) == 10 and rec["commit"]


def test_report_stage_records_provenance(tmp_path):
    from pyspk.metrics.report import write_report

    d = tmp_path / "exp" / "sys" / "scores"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"trials": {"cosine": {"eer": 0.25, "min_dcf_0.01": 0.9}}}))
    res = write_report(tmp_path / "exp", ["sys"], "./run.sh --seed 3", tmp_path / "exp" / "results.md", plot=False)
    assert res["provenance"]["command"] == "./run.sh --seed 3"
    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert saved["provenance"] == res["provenance"]
    assert "command: `./run.sh --seed 3`" in (tmp_path / "exp" / "results.md").read_text()


def test_labelled_runs_are_grouped_by_label(tmp_path):
    a = _run(tmp_path / "a", "aaaaaaa", 0.1, 1)
    b = _run(tmp_path / "b", "aaaaaaa", 0.3, 2)
    c = _run(tmp_path / "c", "bbbbbbb", 0.5, 3)
    out = tmp_path / "page.md"
    assert main(["--title", "T", "--out", str(out), f"offline={a}", f"online={b}", f"online={c}"]) == 0
    text = out.read_text()
    assert "## offline: commit aaaaaaa," in text and "## online: commit aaaaaaa, bbbbbbb," in text
    assert "| proposed | trials_en | cosine | 40.00 ± 14.14 | 0.5000 ± 0.0000 | 2 |" in text
