import json

import pytest
from hostile_tar import peak_of

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
    res = read_results([p], STAGE, COMPONENTS).records
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
        (rec(stage_id=102), "is stage_id 101"),
        (rec(extra="x"), "unknown field"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"mean": float("nan")}}), "not a number a record may hold"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"npix": 10**30}}), "64-bit integer"),
        (rec(dbinfo={"table": "chip_result", "key": {"imfile_id": 101}, "values": {"mean": 10**400}}), "out of range"),
        (rec(start=float("inf")), "not a number a record may hold"),
        (rec(end=10**30), "finite time"),
        (rec(exit=10**30, dbinfo=None), "out of range"),
        (rec(attempts=10**9), "out of range"),
    ],
)
def test_a_bad_record_is_refused_alone_naming_file_and_line(tmp_path, bad, why):
    """One bad record fails its own component (the run's other records stand): it names the
    file and line, and a value out of a column's range never reaches the database."""
    p = write(tmp_path, rec(1, 102), bad)
    res = read_results([p], STAGE, COMPONENTS)
    assert set(res.records) == {1} and res.records[1].good
    assert set(res.refused) == {0}
    assert f"{p}:2: bad record:" in res.refused[0] and why in res.refused[0], res.refused[0]
    assert not res.unattributed


def test_a_record_nested_100000_deep_is_refused_not_a_crash(tmp_path):
    p = tmp_path / "rank-00000.jsonl"
    deep = '{"index": 0, "dbinfo": ' + "[" * 100_000 + "]" * 100_000 + "}"
    p.write_text(json.dumps(rec(1, 102)) + "\n" + deep + "\n")
    res = read_results([p], STAGE, COMPONENTS)
    assert set(res.records) == {1}
    assert "nested too deep" in (res.refused.get(0) or " ".join(res.unattributed))


def test_a_record_for_no_component_of_the_run_is_refused_unattributed(tmp_path):
    p = write(tmp_path, rec(index=7, stage_id=999), rec(1, 102))
    res = read_results([p], STAGE, COMPONENTS)
    assert set(res.records) == {1} and not res.refused
    assert len(res.unattributed) == 1 and "not in this run" in res.unattributed[0] and f"{p}:1:" in res.unattributed[0]


def test_sql_looking_string_in_text_column_refused():
    from scbundle.stages.base import check_value

    assert check_value("c", str, "gpc1.o5303g0240o") is None
    assert "plain token" in check_value("c", str, "x'); DROP TABLE remote_run; --")


def test_not_json_not_utf8_and_duplicates(tmp_path):
    p = tmp_path / "rank-00001.jsonl"
    p.write_bytes(b"{not json\n\xff\xfe\n")
    res = read_results([p], STAGE, COMPONENTS)
    assert not res.records and len(res.unattributed) == 2
    assert "rank-00001.jsonl:1:" in res.unattributed[0] and "rank-00001.jsonl:2:" in res.unattributed[1]
    p.write_text(json.dumps(rec()) + "\n" + json.dumps(rec()) + "\n")
    res = read_results([p], STAGE, COMPONENTS)
    assert not res.records and "reported twice" in res.refused[0]


def test_a_huge_line_is_refused_naming_file_and_line_with_bounded_memory(tmp_path):
    p = tmp_path / "rank-00000.jsonl"
    with open(p, "w") as f:  # a valid record whose error text is 32 MiB: well-formed, but no record is that big
        f.write(json.dumps(rec()) + "\n" + json.dumps(rec(1, 102, exit=5, dbinfo=None, error="x" * (32 << 20))) + "\n")

    def read():
        with pytest.raises(DbinfoError, match=r"rank-00000.jsonl:2: a line longer than 1048576 bytes"):
            read_results([p], STAGE, COMPONENTS)

    assert peak_of(read) < 4 << 20


def test_a_rank_file_larger_than_the_run_can_need_is_refused(tmp_path):
    p = tmp_path / "rank-00000.jsonl"  # 2 components: at most 1 MiB + 2 x 16 KiB of results
    p.write_text(json.dumps(rec()) + "\n" + "\n" * (1 << 20) + " " * 40_000 + "\n" + json.dumps(rec(1, 102)) + "\n")
    with pytest.raises(DbinfoError, match=r"rank-00000.jsonl: more than 1081344 bytes of results for a run of 2 component"):
        read_results([p], STAGE, COMPONENTS)


def test_a_deeply_nested_record_is_refused_not_a_crash(tmp_path):
    p = tmp_path / "rank-00000.jsonl"
    p.write_text('{"index": 0, "dbinfo": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + json.dumps(rec(1, 102)) + "\n")
    res = read_results([p], STAGE, COMPONENTS)
    assert list(res.records) == [1] and "rank-00000.jsonl:1: bad record" in res.unattributed[0]


def test_an_oversized_summary_is_refused_naming_the_file(tmp_path):
    from scbundle.steps.collect import read_summary

    (tmp_path / "returned").mkdir()
    p = tmp_path / "returned" / "summary.json"
    p.write_text(json.dumps({"job_start": 1, "pad": "x" * (2 << 20)}))  # a summary of no components: 1 MiB at most
    with pytest.raises(DbinfoError, match=r"summary.json: more than 1048576 bytes"):
        read_summary(tmp_path)
    p.write_text(json.dumps({"job_start": 1, "job_end": 2}))
    assert read_summary(tmp_path) == {"job_start": 1, "job_end": 2}


def test_a_not_started_for_its_input_record_is_read(tmp_path):
    """What sc_runner.py writes when a component's input is gone from the site (phase input)."""
    gone = rec(1, 102, exit=2, phase="input", attempts=0, dbinfo=None, error="not started: input /s/x is missing on the site")
    res = read_results([write(tmp_path, rec(), gone)], STAGE, COMPONENTS)
    assert (res.records[1].phase, res.records[1].attempts, res.records[1].good) == ("input", 0, False)
    assert "missing on the site" in res.records[1].error
