"""The one Ray module's failure report (visual_words.ray_tasks); its start-up, wait loop and resources run in
tests/test_sweep.py, tests/test_evaluate_fanout.py and tests/test_reliability_faults.py (loopback only)."""

from __future__ import annotations

from visual_words.ray_tasks import failure_report, last_line


def test_failure_report_names_the_first_trial_of_each_failed_job_and_counts_the_rest():
    failed = [(["classification/coco/cup/anchor=dog/delta=0.5", "b", "c"], "ValueError: boom"), (["d"], "OOM")]
    assert failure_report(failed, "trials", "trials") == (
        "4 trials failed (re-run to resume; finished trials are kept):\n"
        "  classification/coco/cup/anchor=dog/delta=0.5 (+2 more): ValueError: boom\n"
        "  d: OOM")
    assert failure_report([(["x"], "e")], "trial evaluations", "rows").startswith(
        "1 trial evaluations failed (re-run to resume; finished rows are kept):")


def test_last_line_keeps_the_remote_errors_last_line():
    assert last_line(RuntimeError("Traceback (most recent call last):\n  ...\nValueError: bad input\n")) == \
        "ValueError: bad input"
    assert last_line(RuntimeError("")) == "RuntimeError('')"
