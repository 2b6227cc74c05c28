"""Text from the site never carries a terminal's control sequences into what scbundle prints
(core/text.py), however it arrives: a scheduler's words, a command's stderr, a rank file."""

from __future__ import annotations

import json

import pytest

from scbundle.core.errors import CommandError
from scbundle.site.schedulers.moab import MoabScheduler
from scbundle.site.schedulers.slurm import SlurmScheduler
from scbundle.steps.replay import read_results

TITLE = "\x1b]0;owned-title\x07"  # OSC 0: the window's title
CLEAR = "\x1b[2J\x1b[H"  # CSI: clear the screen, cursor home
LINK = "\x1b]8;;http://evil.example/\x1b\\click me\x1b]8;;\x1b\\"  # OSC 8 hyperlink
C1 = "\x9b31m\x9d0;t\x9c"  # the same in 8-bit C1 form
HOSTILE = f"{TITLE}{CLEAR}bad{LINK}\r{C1}\x07\x08\x7f end"


def no_controls(text: str, *, newlines: bool = False) -> bool:
    allowed = "\n\t" if newlines else ""
    return not any((ord(c) < 0x20 and c not in allowed) or 0x7F <= ord(c) <= 0x9F for c in text)


def test_printable_drops_sequences_whole_and_keeps_the_words():
    from scbundle.core.text import printable

    out = printable(HOSTILE)
    assert out == "badclick me  end"
    assert "owned-title" not in out and "evil.example" not in out  # the sequences' payloads go too
    assert printable("line one\r\nline\ttwo", multiline=True) == "line one\nline\ttwo"
    assert printable("line one\nline\ttwo") == "line one line two"
    assert printable("\x1b]0;never terminated title and the rest") == ""
    text = "plain text, é ünïcode ✓ [bold]not markup[/]"
    assert printable(text) is text


def test_command_error_stderr_tail_is_printable():
    err = CommandError(["sc_remote.py", "missing"], 3, f"Traceback\n{HOSTILE}\n".encode())
    assert no_controls(err.stderr_tail, newlines=True) and no_controls(str(err), newlines=True)
    assert "exit 3" in str(err) and "badclick me" in err.stderr_tail


def test_scheduler_words_are_printable():
    line = f"JobId=42 JobName=chip.1.a1 JobState=FAILED{TITLE} Reason=NodeDown{CLEAR}x ExitCode=1:0 RunTime=00:00:05"
    st = SlurmScheduler().parse_status(line, "", 0, ["42"])["42"]
    assert st.job_id == "42" and no_controls(st.raw) and no_controls(st.reason)
    gone = SlurmScheduler().parse_status("", f"slurm_load_jobs error: Invalid job id specified{LINK}", 1, ["42"])["42"]
    assert no_controls(gone.reason) and "Invalid job id" in gone.reason
    moab = MoabScheduler().parse_status("", f"ERROR:  cannot locate job '7'{TITLE}", 1, ["7"])["7"]
    assert no_controls(moab.reason)


def test_rank_file_error_and_host_are_printable(tmp_path):
    from scbundle.core.config import config_from_dict, embedded_default
    from scbundle.stages.registry import get_stage

    stage = get_stage("chip", config_from_dict(embedded_default(tmp_path), "test"))
    rec = {"index": 0, "stage_id": 7, "rank": 0, "host": f"node1{TITLE}", "attempts": 2, "exit": 5, "phase": "command",
           "start": 1.0, "end": 2.0, "dbinfo": None, "error": f"first line\n{HOSTILE}"}  # fmt: skip
    f = tmp_path / "rank-00000.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    res = read_results([f], stage, {0: 7}).records[0]
    assert res.host == "node1" and no_controls(res.error or "", newlines=True) and "first line\n" in (res.error or "")


@pytest.mark.parametrize("value", [HOSTILE, ["a", {"k": HOSTILE}], {"message": HOSTILE, "n": 3}])
def test_json_data_is_printable(value):
    from scbundle.core.text import printable_data

    assert no_controls(json.loads(json.dumps(printable_data(value))).__repr__())
    assert "\\u001b" not in json.dumps(printable_data(value))
