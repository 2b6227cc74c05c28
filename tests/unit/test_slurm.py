"""The Slurm backend's pure builders and parsers, on text captured from Slurm 22.05.8
(tests/data/slurm/, see its README.md for the exact commands)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scbundle.core.errors import CommandError
from scbundle.site.schedulers import JobState, SubmitContext
from scbundle.site.schedulers.slurm import SlurmScheduler, parse_duration, parse_exit_code

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
S = SlurmScheduler()


def captured(name: str) -> tuple[str, str, int]:
    """(stdout, stderr, rc) of a capture: NAME.txt alone, or NAME.stdout/.stderr/.rc."""
    txt = DATA / f"{name}.txt"
    if txt.exists():
        return txt.read_text(), "", 0
    return ((DATA / f"{name}.stdout").read_text(), (DATA / f"{name}.stderr").read_text(), int((DATA / f"{name}.rc").read_text()))


def job_id_of(name: str) -> str:
    return captured(name)[0].split("JobId=")[1].split()[0]


@pytest.mark.parametrize(
    ("name", "state", "raw", "exit_code"),
    [
        ("scontrol-pending", JobState.PENDING, "PENDING", 0),
        ("scontrol-pending-held", JobState.PENDING, "PENDING", 0),
        ("scontrol-running", JobState.RUNNING, "RUNNING", 0),
        ("scontrol-completed", JobState.COMPLETED, "COMPLETED", 0),
        ("scontrol-failed", JobState.FAILED, "FAILED", 3),
        ("scontrol-cancelled", JobState.CANCELLED, "CANCELLED", 128 + 15),
        ("scontrol-timeout", JobState.TIMEOUT, "TIMEOUT", 128 + 15),
    ],
)
def test_scontrol_states(name, state, raw, exit_code):
    out, err, rc = captured(name)
    jid = job_id_of(name)
    (st,) = S.parse_status(out, err, rc, [jid]).values()
    assert (st.job_id, st.state, st.raw, st.exit_code) == (jid, state, raw, exit_code)
    assert st.name.startswith("scb-capture")


def test_timeout_keeps_reason_and_runtime():
    out, err, rc = captured("scontrol-timeout")
    (st,) = S.parse_status(out, err, rc, [job_id_of("scontrol-timeout")]).values()
    assert st.reason == "TimeLimit" and st.elapsed_s == 87


def test_held_job_reason_kept():
    out, err, rc = captured("scontrol-pending-held")
    (st,) = S.parse_status(out, err, rc, [job_id_of("scontrol-pending-held")]).values()
    assert st.reason == "JobHeldUser"


@pytest.mark.parametrize("name", ["scontrol-forgotten", "scontrol-never-issued"])
def test_forgotten_job_is_unknown_not_an_error(name):
    out, err, rc = captured(name)
    assert rc == 1
    st = S.parse_status(out, err, rc, ["123"])["123"]
    assert st.state == JobState.UNKNOWN and "Invalid job id" in st.reason


def test_controller_down_is_an_error_with_its_message():
    with pytest.raises(CommandError, match="Unable to contact slurm controller"):
        S.parse_status("", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)", 1, ["5"])


def test_parse_submit_on_captured_sbatch():
    out, _err, rc = captured("sbatch-parsable")
    assert rc == 0 and S.parse_submit(out) == out.strip()
    assert S.parse_submit("4242;cluster\n") == "4242"
    with pytest.raises(CommandError):
        S.parse_submit("Submitted batch job 12\n")  # not --parsable


def test_refused_submission_text_is_what_sbatch_says():
    _out, err, rc = captured("sbatch-bad-partition")
    assert rc == 1 and "invalid partition specified: nosuchpart" in err


def test_builders_quote_nothing_themselves_and_keep_one_argument():
    ctx = SubmitContext("scb-chip-1-a1", "/tmp/a'; echo foo", "/tmp/a'; echo foo/job.sh", "/t", "python3", "/r")
    assert S.submit_argv(ctx) == ["sbatch", "--parsable", "/tmp/a'; echo foo/job.sh"]
    assert S.status_argv(ctx, ["77"]) == ["scontrol", "show", "job", "-o", "77"]
    assert S.cancel_argv(ctx, "77") == ["scancel", "77"]
    with pytest.raises(ValueError):
        S.status_argv(ctx, ["77; rm -rf /"])


def test_durations_and_exit_codes():
    assert parse_duration("00:01:27") == 87 and parse_duration("1-02:00:00") == 93600 and parse_duration("UNLIMITED") is None
    assert parse_exit_code("3:0") == 3 and parse_exit_code("0:9") == 137 and parse_exit_code("x") is None


def test_a_site_slurm_conf_goes_with_every_slurm_command():
    from scbundle.site.schedulers.base import SubmitContext
    from scbundle.site.schedulers.slurm import SlurmScheduler

    ctx = SubmitContext("j", "/r", "/r/job.sh", "/t", "python3", "/reg", slurm_conf="/home/me/slurm/slurm.conf")
    s = SlurmScheduler()
    env = ["env", "SLURM_CONF=/home/me/slurm/slurm.conf"]
    assert s.submit_argv(ctx) == [*env, "sbatch", "--parsable", "/r/job.sh"]
    assert s.status_argv(ctx, ["12"])[:2] == env and s.cancel_argv(ctx, "12") == [*env, "scancel", "12"]
    plain = SubmitContext("j", "/r", "/r/job.sh", "/t", "python3", "/reg")
    assert s.submit_argv(plain) == ["sbatch", "--parsable", "/r/job.sh"]
