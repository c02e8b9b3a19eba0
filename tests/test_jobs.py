"""pyspk/jobs.py: the one way stages split work into queue jobs, sign them and resume them."""

import hashlib
import sys
from pathlib import Path

import pytest

from pyspk.jobs import JobSet, StageError, num_jobs, ranges, signature, split_lines

REPO_RUN_PL = str(Path(__file__).resolve().parents[1] / "utils" / "run.pl")


@pytest.mark.parametrize("n", range(0, 13))
@pytest.mark.parametrize("nj", [1, 2, 3, 5])
def test_split_is_contiguous_complete_and_near_equal(n, nj):
    lines = [f"u{i:02d}" for i in range(n)]
    for first_longer in (False, True):
        parts = split_lines(lines, nj, first_longer)
        assert len(parts) == nj and sum(parts, []) == lines
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_the_two_placements_of_the_remainder():
    """fbank spreads it (bounds round(i n / nj)); extraction gives it to the first jobs (split_scp.pl).
    Each stage keeps its own: its outputs on disk depend on the partition."""
    lines = list("abcdefghijk")  # 11 into 3
    assert [len(p) for p in split_lines(lines, 3)] == [4, 3, 4]
    assert [len(p) for p in split_lines(lines, 3, first_longer=True)] == [4, 4, 3]


def test_signature_is_sha256_of_nul_terminated_parts():
    want = hashlib.sha256(b"split\0recipes\0config\0").hexdigest()
    assert signature("split", "recipes", "config") == want
    assert signature("ab", "c") != signature("a", "bc")  # parts cannot run into each other


def test_ranges_and_job_count():
    assert ranges([1, 2, 3, 5, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert num_jobs(4, 2) == 2 and num_jobs(4, 0) == 1 and num_jobs(3, 10) == 3


def test_resume_reuses_matching_stamps_and_redoes_the_rest(tmp_path):
    jobs = JobSet(tmp_path, "test", "pyspk.bin.nothing", "t", "t")
    sigs = [signature("one"), signature("two"), signature("three")]
    jobs.finish(1, sigs[0])
    jobs.stamp(2).write_text(hashlib.sha1(b"two").hexdigest() + "\n")  # a stamp of an older format
    assert jobs.stamp_check(1, sigs[0]) == ""
    assert "changed" in jobs.stamp_check(2, sigs[1]) and "no completion stamp" in jobs.stamp_check(3, sigs[2])
    assert jobs.pending(sigs) == [2, 3]
    assert jobs.stamp(1).is_file() and not jobs.stamp(2).exists()  # a pending job has no stamp left
    assert jobs.pending(sigs, force=True) == [1, 2, 3] and not jobs.stamp(1).exists()
    jobs.finish(1, sigs[0])
    assert jobs.pending(sigs, verify=lambda j, sig: "outputs damaged" if j == 1 else "") == [1]


def test_a_failed_job_names_its_log_and_what_it_said(tmp_path):
    """A job that exits non-zero without its stamp: the stage error names its log and its last words."""
    jobs = JobSet(tmp_path, "test", "pyspk.no_such_tool", "t", "t")
    with pytest.raises(StageError, match=r"1 of 1 test job\(s\) failed; see .*t\.1\.log \(job said: .*No module named"):
        jobs.run(REPO_RUN_PL, [1], [])
    assert sys.executable in jobs.log(1).read_text()
