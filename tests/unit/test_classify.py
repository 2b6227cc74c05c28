"""poll's pure mapping from a component's result and the job's end onto state and fault."""

from __future__ import annotations

import pytest

from scbundle.site.schedulers import JobState, JobStatus
from scbundle.stages.base import DbinfoRecord
from scbundle.steps.collect import classify
from scbundle.steps.replay import ComponentResult


def res(exit: int = 0, phase: str = "command", attempts: int = 1, good: bool = True) -> ComponentResult:
    db = DbinfoRecord(7, "t", {}) if good and exit == 0 else None
    return ComponentResult(0, 7, 0, "n1", attempts, exit, phase, 1.0, 2.0, None if db else "boom", db)


def job(state: JobState, raw: str = "X") -> JobStatus:
    return JobStatus("1", "scb-x-1-a1", state, None, raw)


@pytest.mark.parametrize(
    ("state", "fault"),
    [
        (JobState.TIMEOUT, 6),
        (JobState.NODE_FAIL, 2),
        (JobState.PREEMPTED, 2),
        (JobState.CANCELLED, 2),
        (JobState.UNKNOWN, 2),  # vanished from the queue with no record
        (JobState.COMPLETED, 2),  # the job ended and still left no record for it
    ],
)
def test_no_result_takes_its_fault_from_the_jobs_end_and_keeps_the_raw_word(state, fault):
    st, f, msg = classify(None, job(state, raw="RAWWORD"), 2)
    assert (st, int(f)) == ("error", fault) and "RAWWORD" in msg


def test_stopped_components():
    assert classify(res(124, "limit"), job(JobState.COMPLETED), 2)[:2] == ("error", 6)
    assert classify(res(124, "deadline", attempts=0), job(JobState.TIMEOUT), 2)[:2] == ("error", 6)
    assert classify(res(124, "signal"), job(JobState.CANCELLED), 2)[:2] == ("error", 2)
    assert classify(res(124, "signal"), job(JobState.TIMEOUT), 2)[:2] == ("error", 6)


def test_tries_used_up_is_abandoned_with_the_exit_codes_fault():
    assert classify(res(5, attempts=2), job(JobState.COMPLETED), 2)[:2] == ("abandoned", 5)
    assert classify(res(9, attempts=3), job(JobState.COMPLETED), 3)[:2] == ("abandoned", 1)
    assert classify(res(5, attempts=1), job(JobState.COMPLETED), 2)[:2] == ("error", 5)  # tries left (e.g. attempts raised)
    assert classify(res(3, phase="post"), job(JobState.COMPLETED), 2)[:2] == ("error", 3)  # post failures are revertable
    assert classify(res(0), job(JobState.COMPLETED), 2)[:2] == ("full", 0)


def test_a_component_whose_input_was_gone_is_fault_2_whatever_the_job_did():
    # the phase decides, not the exit code the record carries: never a data or unknown fault
    for exit_code in (2, 5, 1):
        for state in (JobState.COMPLETED, JobState.TIMEOUT, JobState.FAILED):
            st, f, msg = classify(res(exit_code, "input", attempts=0), job(state), 2)
            assert (st, int(f)) == ("error", 2) and msg.startswith(f"input exit {exit_code}")
