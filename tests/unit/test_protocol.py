"""The local and the remote side agree by construction: both read remote/sc_protocol.py, and a
bundle the local side writes (bundle/build.py, exec's input listing) is one the runner parses,
its records are ones replay reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scbundle.bundle import multiprog as local_multiprog
from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.build import BundlePlan, assemble
from scbundle.core.protocol import PROTOCOL as P
from scbundle.core.resources import remote_dir, tool_digests
from scbundle.core.states import DEFAULT_FAULT_MAP, DEFAULT_RETRY_FAULTS
from scbundle.site.digests import DigestCache
from scbundle.stages.base import ComponentSpec, Requirement
from scbundle.stages.commands import CommandsStage
from scbundle.steps.exec import _read_requirements, input_listing
from scbundle.steps.replay import RESULT_FIELDS, parse_result_line

sys.path.insert(0, str(remote_dir()))
import multiprog as remote_multiprog  # noqa: E402
import sc_runner  # noqa: E402


def test_both_sides_read_the_one_protocol_file_the_site_is_sent():
    source = remote_dir() / "sc_protocol.py"
    assert Path(P.__file__) == source and Path(sc_runner.P.__file__) == source
    assert "sc_protocol.py=" in tool_digests()  # shipped and verified with the tools
    assert (local_multiprog.MAX_CONFIG_BYTES, local_multiprog.MAX_LINE_CHARS, local_multiprog.MAX_ARGS) == (
        remote_multiprog.MAX_CONFIG_BYTES, remote_multiprog.BUF_SIZE - 3, remote_multiprog.MAX_WORDS)  # fmt: skip
    assert dict(DEFAULT_FAULT_MAP) == P.DEFAULT_FAULT_MAP and set(DEFAULT_RETRY_FAULTS) == P.DEFAULT_RETRY_FAULTS
    plan = BundlePlan(remote_id=1, stage="s", attempt=1, run_dir="/r", tools_dir="/t", python="python3",
                      cores_per_node=4, job_template="slurm/job.sh.j2")  # fmt: skip
    assert dict(plan.fault_map) == P.DEFAULT_FAULT_MAP and set(plan.retry_faults) == P.DEFAULT_RETRY_FAULTS
    # a code no fault names: unknown on both sides, and not tried again in the job
    policy = {"fault_map": {int(k): v for k, v in plan.fault_map}, "retry_faults": frozenset(plan.retry_faults)}
    assert not sc_runner.retried(policy, 77) and sc_runner.retried(policy, 2) and not sc_runner.retried(policy, 5)


def test_the_bundle_the_local_side_writes_is_the_one_the_runner_parses(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shared = data / "shared.txt"
    shared.write_text("shared\n")
    specs = []
    for i in range(5):
        own = data / f"in{i}.txt"
        own.write_text("x" * (i + 1))
        specs.append(ComponentSpec(
            stage_id=100 + i,
            inputs=(Requirement(str(own), f"/site/in{i}.txt", i + 1), Requirement(str(shared), "/site/shared.txt", 7)),
            out_dirs=("/site/out",), command=("echo", f"it's {i}"), post=("true",),
            products=((f"/site/out/{i}", str(data / f"out{i}")),), cost=1.0,
        ))  # fmt: skip
    files = assemble(specs, ResourceRequest(hours=1, nodes=1, nranks=2, threads=1), BundlePlan(
        remote_id=3, stage="s", attempt=1, run_dir=str(tmp_path / "run"), tools_dir="/t", python="python3",
        cores_per_node=4, job_template="slurm/job.sh.j2"))  # fmt: skip
    assert set(P.PER_COMPONENT) | {P.PRE_CMDS, P.REQUIREMENTS_TSV, P.BUNDLE_JSON} <= set(files)
    base = tmp_path / "run"
    for rel, text in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    reqs = _read_requirements(base)  # exec's view of requirements.tsv
    cache = DigestCache.for_workdir(tmp_path / "work")
    try:
        listing, _, _ = input_listing(reqs, cache)
    finally:
        cache.close()
    (base / P.INPUT_FILES_TSV).write_bytes(listing)
    # the runner's view of the same files
    assert sc_runner.load_stage_ids(str(base)) == {i: 100 + i for i in range(5)}
    inputs = sc_runner.Inputs.load(str(base))
    assert inputs is not None
    assert [inputs.of(i) for i in range(5)] == [[(f"/site/in{i}.txt", i + 1), ("/site/shared.txt", 7)] for i in range(5)]
    assert sc_runner.load_cmds(str(base), P.COMMANDS_CMDS)[4] == "echo 'it'\"'\"'s 4'"
    products = [line.split("\t") for line in files[P.PRODUCTS_TSV].splitlines()]
    assert all(len(row) == len(P.COLUMNS[P.PRODUCTS_TSV]) for row in products) and products[2][1] == "/site/out/2"


@pytest.mark.parametrize("make", [
    lambda: sc_runner.unstarted(0, 7, 0, "node1", "deadline"),
    lambda: sc_runner.input_missing(0, 7, 0, "node1", "gone"),
])  # fmt: skip
def test_the_runners_records_are_the_ones_replay_reads(make):
    rec = make()
    assert set(rec) == RESULT_FIELDS == set(P.RESULT_FIELDS)
    res = parse_result_line(json.dumps(rec, sort_keys=True), CommandsStage(), {0: 7})
    assert (res.stage_id, res.exit, res.phase, res.good) == (7, rec["exit"], rec["phase"], False)
