"""The run transition table, the settling rule and the fault policy (core/states.py): pure."""

from __future__ import annotations

import pytest

from scbundle.core.states import (
    FINAL_STATES,
    OPERATOR_COMMANDS,
    TRANSITIONS,
    Counts,
    Fault,
    FaultPolicy,
    RunState,
    allowed,
    exits,
    settle,
)


def test_every_state_but_the_final_ones_has_an_operators_way_out():
    for state in RunState:
        outs = exits(state)
        if state in FINAL_STATES:
            continue
        assert any(t.by in OPERATOR_COMMANDS for t in outs), state
        assert any(t.by in ("revert", "retire") for t in outs), f"{state}: neither revert nor retire leaves it"


def test_retired_is_final_and_full_leaves_only_by_revert_abandoned():
    assert exits(RunState.RETIRED) == []
    assert [(t.dst, t.by) for t in exits(RunState.FULL)] == [(RunState.NEW, "revert")]


def test_the_table_names_known_states_and_no_transition_twice():
    seen = set()
    for t in TRANSITIONS:
        assert t.src in RunState and t.dst in RunState and t.when
        assert (t.src, t.dst, t.by) not in seen
        seen.add((t.src, t.dst, t.by))
    assert allowed("run", "full", "poll") and not allowed("run", "full", "exec")
    assert not allowed("full", "retired", "retire")  # a clean full run is done, not retired


def test_move_refuses_a_transition_the_table_does_not_have():
    from scbundle.core.errors import StateError
    from scbundle.db.models import RemoteRun
    from scbundle.db.runs import move

    run = RemoteRun(remote_id=7, state="new")
    move(run, RunState.ERROR, "prepare", fault=2, message="disk full")
    assert (run.state, run.prev_state, run.fault, run.message) == ("error", "new", 2, "disk full")
    with pytest.raises(StateError, match=r"remote_id 7: exec cannot move a run from 'error' to 'run'"):
        move(run, RunState.RUN, "exec")
    move(run, RunState.NEW, "revert", fault=0)
    assert (run.state, run.prev_state, run.fault, run.message) == ("new", None, 0, None)


@pytest.mark.parametrize(
    "counts, policy, want",
    [
        (Counts(full=10), "fatal", (RunState.FULL, 0, None)),
        (Counts(full=8, error=2, error_faults={5: 2}), "fatal", (RunState.ERROR, 5, "2 of 10 component(s) failed")),
        (Counts(full=8, error=1, abandoned=1, error_faults={2: 1}, abandoned_faults={5: 1}), "fatal", (RunState.ERROR, 2, "1 of 10 component(s) failed, 1 abandoned")),
        (Counts(full=8, abandoned=2, abandoned_faults={6: 2}), "fatal", (RunState.FULL, 6, "2 of 10 component(s) abandoned")),
        (Counts(full=8, error=2, error_faults={5: 1, 4: 1}), "ignore", (RunState.FULL, 4, "2 failed, ignored by job_policy")),
    ],
)
def test_a_settled_run_agrees_with_its_components(counts, policy, want):
    state, fault, message = settle(counts, job_policy=policy)
    assert (state, fault) == want[:2]
    assert (message is None) == (want[2] is None)
    if want[2]:
        assert want[2] in message
    if state == RunState.FULL and fault:
        assert message  # a full run with failures never reads as clean


def test_an_open_run_is_not_settled():
    with pytest.raises(ValueError):
        settle(Counts(open=1, full=3))


def test_a_stage_fault_policy():
    p = FaultPolicy({1: Fault.DATA, -9: Fault.SYSTEM, 124: Fault.TIMEOUT}, frozenset({Fault.SYSTEM, Fault.TIMEOUT}))
    assert p.fault(0) == Fault.NONE and p.fault(1) == Fault.DATA and p.fault(77) == Fault.UNKNOWN
    assert not p.retried(1) and p.retried(-9) and p.retried(124) and not p.retried(77) and not p.retried(0)
