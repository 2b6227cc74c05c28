import json

import pytest

from scbundle.core.errors import DbinfoError
from scbundle.stages.chip import ChipStage
from scbundle.steps.replay import read_results

STAGE = ChipStage()
COMPONENTS = {0: 101, 1: 102}


def rec(index=0, stage_id=101, exit=0, **over):
    r = {
        "index": index, "stage_id": stage_id, "rank": 0, "host": "n1", "attempts": 1, "exit": exit,
        "phase": "command", "start": 1.0, "end": 2.0, "error": None,
        "dbinfo": {"table": "chip_result", "key": {"imfile_id": stage_id}, "values": {"mean": 1.5, "npix": 4096}},
    }  # fmt: skip
    r.update(over)
    return r


def write(tmp_path, *records):
    p = tmp_path / "rank-00000.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def test_good_records(tmp_path):
    p = write(tmp_path, rec(), rec(1, 102, exit=5, dbinfo=None))
    res = read_results([p], STAGE, COMPONENTS)
    assert res[0].good and res[0].dbinfo.values == {"mean": 1.5, "npix": 4096}
    assert not res[1].good and res[1].exit == 5


@pytest.mark.parametrize(
    "bad, why",
    [
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"evil": 1}}), "unknown column 'evil'"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"npix": "4096"}}), "wants an integer"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"mean": "1; DROP TABLE remote_run"}}), "wants a finite number"),
        (rec(dbinfo={"table": "remote_run", "key": {"imfile_id": 101}, "values": {}}), "not one the chip stage writes"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 999}, "values": {}}), "not this component"),
        (rec(index=7, stage_id=999), "not in this run"),
        (rec(stage_id=102), "is stage_id 101"),
        (rec(extra="x"), "unknown field"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"mean": float("nan")}}), "finite"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, bad, why):
    p = write(tmp_path, rec(1, 102), bad)
    with pytest.raises(DbinfoError, match=why) as ei:
        read_results([p], STAGE, COMPONENTS)
    assert f"{p}:2:" in str(ei.value)


def test_sql_looking_string_in_text_column_refused():
    from scbundle.stages.base import check_value

    assert check_value("c", str, "gpc1.o5303g0240o") is None
    assert "plain token" in check_value("c", str, "x'); DROP TABLE remote_run; --")


def test_not_json_and_duplicates(tmp_path):
    p = tmp_path / "rank-00001.jsonl"
    p.write_text("{not json\n")
    with pytest.raises(DbinfoError, match=r"rank-00001.jsonl:1:"):
        read_results([p], STAGE, COMPONENTS)
    p.write_text(json.dumps(rec()) + "\n" + json.dumps(rec()) + "\n")
    with pytest.raises(DbinfoError, match="reported twice"):
        read_results([p], STAGE, COMPONENTS)


def test_a_not_started_for_its_input_record_is_read(tmp_path):
    """What sc_runner.py writes when a component's input is gone from the site (phase input)."""
    gone = rec(1, 102, exit=2, phase="input", attempts=0, dbinfo=None, error="not started: input /s/x is missing on the site")
    res = read_results([write(tmp_path, rec(), gone)], STAGE, COMPONENTS)
    assert (res[1].phase, res[1].attempts, res[1].good) == ("input", 0, False)
    assert "missing on the site" in res[1].error
