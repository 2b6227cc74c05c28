"""MoabScheduler: builders, and parsers run on real Moab output (tests/data/moab/SOURCES.md)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.build import BundlePlan, assemble
from scbundle.core.errors import BundleError, CommandError
from scbundle.site.schedulers.base import JobState, Scheduler, SubmitContext
from scbundle.site.schedulers.moab import MoabScheduler, parse_checkjob, parse_duration
from scbundle.stages.base import ComponentSpec

DATA = Path(__file__).parent.parent / "data" / "moab"
ODD = "/tmp/a'; echo foo/job.sh"


def ctx(script: str = "/perm/runs/chip.7.a1/job.sh") -> SubmitContext:
    return SubmitContext(job_name="scb-chip-7-a1", run_dir=str(Path(script).parent), script=script,
                         tools_dir="/perm/tools/x", python="python3", registry="")  # fmt: skip


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def test_implements_the_protocol():
    s: Scheduler = MoabScheduler()
    assert (s.name, s.job_template) == ("moab", "moab/job.sh.j2")


# ---- builders ----


def test_submit_argv_is_msub_and_the_script_as_one_word():
    argv = MoabScheduler().submit_argv(ctx(ODD))
    assert argv == ["msub", ODD]
    assert shlex.split(shlex.join(argv)) == argv  # survives the shell of the link intact


def test_account_and_partition_stay_in_the_script_not_on_the_command_line():
    c = SubmitContext("n", "/r", "/r/job.sh", "/t", "python3", "", account="acct1", partition="standard")
    assert MoabScheduler().submit_argv(c) == ["msub", "/r/job.sh"]


def test_status_and_cancel_argv_for_one_job():
    s = MoabScheduler()
    assert s.status_argv(ctx(), ["Moab.123"]) == ["checkjob", "Moab.123"]
    assert s.cancel_argv(ctx(), "123") == ["canceljob", "123"]


@pytest.mark.parametrize("bad", ["a'; echo foo", "1 2", "12\n13", "", "$(id)"])
def test_ids_that_are_not_moab_ids_are_refused(bad):
    with pytest.raises(ValueError):
        MoabScheduler().status_argv(ctx(), [bad])
    with pytest.raises(ValueError):
        MoabScheduler().cancel_argv(ctx(), bad)


def test_several_ids_loop_over_positional_parameters(tmp_path):
    argv = MoabScheduler().status_argv(ctx(), ["Moab.1", "2", "3"])
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "Moab.1", "2", "3"]
    assert "Moab.1" not in argv[2]  # ids are arguments, never script text
    # run the loop with a stand-in checkjob: one answer per id, each with its exit status
    fake = tmp_path / "checkjob"
    fake.write_text("#!/bin/sh\n[ \"$1\" = 2 ] && { echo \"ERROR:  cannot locate job '$1'\" >&2; exit 153; }\n"
                    "printf 'job %s\\n\\nState: Running\\nWallTime:   0:00:05 of 1:00:00\\n' \"$1\"\n")  # fmt: skip
    fake.chmod(0o755)
    p = subprocess.run(argv, check=False, capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    got = MoabScheduler().parse_status(p.stdout, p.stderr, p.returncode, ["Moab.1", "2", "3"])
    assert {j: s.state for j, s in got.items()} == {"Moab.1": JobState.RUNNING, "2": JobState.UNKNOWN, "3": JobState.RUNNING}
    assert got["3"].elapsed_s == 5


# ---- msub ----


@pytest.mark.parametrize("name,job_id", [("msub-doc.txt", "3"), ("msub-site.txt", "98337")])
def test_parse_submit_on_real_msub_output(name, job_id):
    assert MoabScheduler().parse_submit(fixture(name)) == job_id


def test_parse_submit_keeps_the_moab_prefix():
    assert MoabScheduler().parse_submit("\nMoab.123\n") == "Moab.123"


@pytest.mark.parametrize("text", ["", "\n\n", "ERROR:  cannot submit job\n", "\nMoab.\n", "\n12 13\n"])
def test_parse_submit_refuses_anything_else_with_the_text(text):
    with pytest.raises(CommandError) as err:
        MoabScheduler().parse_submit(text)
    assert repr(text.strip()) in str(err.value)


# ---- checkjob ----


def status(name: str, job_id: str):
    return MoabScheduler().parse_status(fixture(name), "", 0, [job_id])[job_id]


def test_idle_job_from_the_documentation():
    s = status("checkjob-idle-doc.txt", "717")
    assert (s.state, s.raw, s.exit_code, s.elapsed_s) == (JobState.PENDING, "Idle", None, 0)
    assert "idle procs do not meet requirements" in s.reason


def test_blocked_job_keeps_moabs_reason():
    s = status("checkjob-blocked.txt", "235875")
    assert (s.state, s.raw, s.name) == (JobState.PENDING, "Idle", "STDIN")
    assert "BLOCK MSG: job 235875 violates active HARD MAXJOB limit" in s.reason


def test_running_job():
    s = status("checkjob-running.txt", "235878")
    assert (s.state, s.raw, s.exit_code, s.elapsed_s) == (JobState.RUNNING, "Running", None, 0)


def test_completed_job_code_zero_on_the_state_line():
    s = status("checkjob-completed.txt", "546324")
    assert (s.state, s.raw, s.exit_code, s.elapsed_s, s.name) == (JobState.COMPLETED, "Completed", 0, 91, "submit-stats.sh")


def test_completed_271_is_torques_cancelled_running_job():
    s = status("checkjob-completed-271.txt", "235888")
    assert (s.state, s.raw, s.exit_code, s.elapsed_s) == (JobState.CANCELLED, "Completed", 271, 657)


def test_a_job_moab_no_longer_knows_is_unknown():
    got = MoabScheduler().parse_status("", fixture("checkjob-cannot-locate.stderr"), 153, ["42010"])
    assert got["42010"].state is JobState.UNKNOWN
    assert "cannot locate job '42010'" in got["42010"].reason


def test_a_moab_that_cannot_answer_raises_with_command_code_and_message():
    with pytest.raises(CommandError) as err:
        MoabScheduler().parse_status("", fixture("checkjob-communication-error.stderr"), 1, ["Moab.5"])
    e = err.value
    assert (e.argv, e.returncode) == (["checkjob", "Moab.5"], 1)
    assert "communication error kronos.ccs.miami.edu:42559" in e.stderr_tail


def test_an_answer_without_a_state_raises():
    with pytest.raises(CommandError):
        MoabScheduler().parse_status("job 5\n\nsomething else\n", "", 0, ["5"])


# The cases below have no real checkjob capture (SOURCES.md, "Cases no source shows"): they
# are the fixtures' own lines with the state, code and wallclock changed, to pin the rules.


def edited(name: str, state: str, code: int | None = None, wall: str | None = None) -> str:
    text = fixture(name).replace("State: Completed Completion Code: 0", f"State: {state}")
    if code is not None:
        text = text.replace(f"State: {state}", f"State: {state} Completion Code: {code}")
    if wall is not None:
        text = text.replace("WallTime:   00:01:31 of 2:00:00", f"WallTime:   {wall}")
    return text


@pytest.mark.parametrize(
    "state,code,wall,expected",
    [
        ("Completed", 3, None, JobState.FAILED),
        ("Completed", 0, "2:00:04 of 2:00:00", JobState.COMPLETED),  # ended at the limit, but fine
        ("Completed", 143, "2:00:04 of 2:00:00", JobState.TIMEOUT),
        ("Removed", 0, None, JobState.CANCELLED),
        ("Removed", 0, "2:00:31 of 2:00:00", JobState.TIMEOUT),
        ("Removed", None, "2:00:00 of 2:00:00", JobState.TIMEOUT),
        ("Vacated", None, None, JobState.NODE_FAIL),
        ("Vacated", None, "1:00:00:00 of 2:00:00", JobState.TIMEOUT),
        ("SubmitErr", None, None, JobState.FAILED),
        ("Deferred", None, None, JobState.PENDING),
        ("NotQueued", None, None, JobState.PENDING),
        ("BatchHold", None, None, JobState.PENDING),
        ("UserHold", None, None, JobState.PENDING),
        ("SystemHold", None, None, JobState.PENDING),
        ("Staged", None, None, JobState.PENDING),
        ("Starting", None, None, JobState.RUNNING),
        ("Suspended", None, None, JobState.RUNNING),
        ("Canceling", None, None, JobState.RUNNING),
        ("Frobnicated", None, None, JobState.UNKNOWN),
    ],
)
def test_state_rules(state, code, wall, expected):
    got = MoabScheduler().parse_status(edited("checkjob-completed.txt", state, code, wall), "", 0, ["546324"])["546324"]
    assert (got.state, got.raw, got.exit_code) == (expected, state, code)


def test_timeout_says_why():
    text = edited("checkjob-completed.txt", "Removed", 0, "2:00:31 of 2:00:00")
    got = MoabScheduler().parse_status(text, "", 0, ["546324"])["546324"]
    assert got.reason == "wallclock used 7231 s of a 7200 s limit" and got.elapsed_s == 7231


def test_a_message_that_names_the_wallclock_limit_is_a_timeout():
    text = edited("checkjob-completed.txt", "Removed") + "Message[0]  job exceeded wallclock limit\n"
    assert MoabScheduler().parse_status(text, "", 0, ["546324"])["546324"].state is JobState.TIMEOUT


def test_maui_style_header_is_read_too():
    r = parse_checkjob("checking job gregory.127\n\nState: Running\nWallTime: 00:00:22 of 00:05:00\n")
    assert r is not None and (r.job_id, r.state_word, r.used_s, r.limit_s) == ("gregory.127", "Running", 22, 300)


@pytest.mark.parametrize(
    "text,seconds",
    [("00:01:31", 91), ("2:00:00", 7200), ("1:05:57:31", 107851), ("45", 45), ("INFINITY", None), ("-", None), ("1:2:3:4:5", None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


# ---- the job scripts: account and partition lines only when given ----


def job_script(template: str, **plan) -> str:
    spec = ComponentSpec(1, (), ("/scratch/out",), ("true",), ("true",), (), 1.0)
    bp = BundlePlan(remote_id=7, stage="chip", attempt=1, run_dir="/perm/runs/chip.7.a1", tools_dir="/perm/tools/x",
                    python="python3", cores_per_node=24, job_template=template, **plan)  # fmt: skip
    return assemble([spec], ResourceRequest(hours=2, nodes=1, nranks=1, threads=1), bp)["job.sh"]


def directives(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


def test_msub_script_directives():
    plain = directives(job_script("moab/job.sh.j2"), "#MSUB")
    assert plain == ["#MSUB -N scb-chip-7-a1", "#MSUB -l nodes=1:ppn=24,walltime=2:00:00", "#MSUB -j oe",
                     "#MSUB -o /perm/runs/chip.7.a1/job.out"]  # fmt: skip
    both = directives(job_script("moab/job.sh.j2", account="w23_ps1", partition="standard"), "#MSUB")
    assert both == [*plain, "#MSUB -A w23_ps1", "#MSUB -q standard"]
    assert directives(job_script("moab/job.sh.j2", partition="standard"), "#MSUB") == [*plain, "#MSUB -q standard"]


def test_sbatch_script_directives_mirror_them():
    plain = directives(job_script("slurm/job.sh.j2"), "#SBATCH")
    both = directives(job_script("slurm/job.sh.j2", account="w23_ps1", partition="standard"), "#SBATCH")
    assert both == [*plain, "#SBATCH --account=w23_ps1", "#SBATCH --partition=standard"]
    # sbatch reads directive values by its own rules (quotes, backslashes, #): a value outside
    # a plain charset is refused, never quoted (the config's pattern refuses it earlier)
    with pytest.raises(BundleError, match="'a b' cannot go in a job script's directive"):
        job_script("slurm/job.sh.j2", account="a b")


# ---- the stand-in checkjob (tests/moabshim) read by the same parser ----
# A fake scontrol prints one line of `scontrol show job -o` as Slurm 22.05 printed it here
# (a job that exited 3), with the fields a case needs changed; states the test Slurm cannot
# produce on demand (NODE_FAIL, held jobs) are covered this way.

SHIM = Path(__file__).resolve().parents[1] / "moabshim"
SCONTROL_LINE = (
    "JobId=28 JobName=probe UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901732 Nice=0 "
    "Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:02 TimeLimit=02:00:00 TimeMin=N/A "
    "SubmitTime=2026-11-23T14:34:51 EligibleTime=2026-11-23T14:34:51 AccrueTime=2026-11-23T14:34:51 "
    "StartTime=2026-11-23T14:34:52 EndTime=2026-11-23T14:34:54 Deadline=N/A SuspendTime=None "
    "SecsPreSuspend=0 LastSchedEval=2026-11-23T14:34:52 Scheduler=Main Partition=debug "
    "AllocNode:Sid=localhost:28180 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm "
    "NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 "
    "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 "
    "Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=(null) WorkDir=/tmp StdErr=/tmp/probe-28.out StdIn=/dev/null StdOut=/tmp/probe-28.out Power= "
)


def shim_checkjob(tmp_path: Path, job_id: str, line: str | None, err: str = "", rc: int = 0) -> subprocess.CompletedProcess:
    (tmp_path / "line").write_text(line or "")
    (tmp_path / "err").write_text(err)
    fake = tmp_path / "scontrol"
    fake.write_text(f'#!/bin/sh\ncat {tmp_path}/line; cat {tmp_path}/err >&2; exit {rc}\n')
    fake.chmod(0o755)
    return subprocess.run([str(SHIM / "checkjob"), job_id], check=False, capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})  # fmt: skip


@pytest.mark.parametrize(
    "changes,word,state,code",
    [
        ({}, "Completed", JobState.FAILED, 3),
        ({"JobState": "COMPLETED", "ExitCode": "0:0", "Reason": "None"}, "Completed", JobState.COMPLETED, 0),
        ({"JobState": "FAILED", "ExitCode": "0:9"}, "Completed", JobState.FAILED, 137),
        ({"JobState": "CANCELLED", "ExitCode": "0:15"}, "Removed", JobState.CANCELLED, 143),
        ({"JobState": "TIMEOUT", "ExitCode": "0:15", "RunTime": "02:00:27"}, "Removed", JobState.TIMEOUT, 143),
        ({"JobState": "NODE_FAIL", "ExitCode": "0:0"}, "Vacated", JobState.NODE_FAIL, 0),
        ({"JobState": "RUNNING", "Reason": "None"}, "Running", JobState.RUNNING, None),
        ({"JobState": "PENDING", "Reason": "Resources"}, "Idle", JobState.PENDING, None),
        ({"JobState": "PENDING", "Reason": "JobHeldUser"}, "UserHold", JobState.PENDING, None),
        ({"JobState": "PENDING", "Reason": "JobHeldAdmin"}, "SystemHold", JobState.PENDING, None),
    ],
)
def test_stand_in_checkjob_speaks_checkjobs_text(tmp_path, changes, word, state, code):
    line = SCONTROL_LINE
    for key, value in changes.items():
        line = re.sub(rf"(^| ){re.escape(key)}=\S*", rf"\g<1>{key}={value}", line)
    p = shim_checkjob(tmp_path, "Moab.28", line)
    assert p.returncode == 0, p.stderr
    s = MoabScheduler().parse_status(p.stdout, p.stderr, p.returncode, ["Moab.28"])["Moab.28"]
    assert (s.raw, s.state, s.exit_code, s.name) == (word, state, code, "probe")
    if state is JobState.PENDING and changes["Reason"] == "Resources":
        assert s.reason == "BLOCK MSG: Resources (recorded at last scheduling iteration)"


def test_stand_in_checkjob_unknown_and_unreachable(tmp_path):
    p = shim_checkjob(tmp_path, "Moab.28", None, "slurm_load_jobs error: Invalid job id specified\n", 1)
    assert (p.returncode, p.stderr) == (153, "ERROR:  cannot locate job 'Moab.28'\n")
    p = shim_checkjob(tmp_path, "28", None, "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", 1)
    assert p.returncode == 1
    with pytest.raises(CommandError) as err:
        MoabScheduler().parse_status(p.stdout, p.stderr, p.returncode, ["28"])
    assert "Unable to contact slurm controller" in err.value.stderr_tail
