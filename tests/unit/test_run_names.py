"""Run identity, pure: the names a run gets on a site, and whose job a run directory holds."""

from __future__ import annotations

import re

import pytest

from scbundle.site.layout import job_name, remote_run_dir
from scbundle.steps.collect import not_own

INST = "k3x9abcdq2m7rt5w"


def test_names_carry_the_installation_id_and_stay_scheduler_safe():
    name = job_name("chip", 1, 1, INST)
    assert name == f"scb-chip-1-a1-{INST}" and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and len(name) <= 64
    assert job_name("chip", 1, 1, None) == "scb-chip-1-a1"  # a run named before installation ids
    assert remote_run_dir("/perm/", "chip", 1, 2, INST) == f"/perm/runs/{INST}/chip.1.a2"
    assert remote_run_dir("/perm", "chip", 1, 2, None) == "/perm/runs/chip.1.a2"
    assert job_name("chip", 1, 1, "other00000000000") != job_name("chip", 1, 1, INST)


def own(**kw):
    return {"installation": INST, "remote_id": 7, "attempt": 2, "job_name": "x"} | kw


@pytest.mark.parametrize("owner", [own(), None])
def test_a_run_directory_of_its_own_job_is_accepted(owner):
    assert not_own(owner, installation=INST, remote_id=7, attempt=2) is None


@pytest.mark.parametrize("owner", [
    own(installation="zzzzzzzzzzzzzzzz"), own(installation=None), own(remote_id=8), own(attempt=1),
    own(installation=None, remote_id=None, attempt=None),  # a job of the old tools: whose, it cannot say
])  # fmt: skip
def test_another_runs_job_is_refused_naming_both(owner):
    why = not_own(owner, installation=INST, remote_id=7, attempt=2)
    assert why and f"installation {INST} remote_id 7 attempt 2" in why
    assert f"remote_id {owner['remote_id']} attempt {owner['attempt']}" in why


def test_a_run_made_before_installation_ids_compares_what_its_job_wrote():
    old_tools = {"installation": None, "remote_id": None, "attempt": None, "job_name": None}  # pre.json of its time
    assert not_own(old_tools, installation=None, remote_id=7, attempt=2) is None
    assert not_own(own(installation=None, attempt=None), installation=None, remote_id=7, attempt=2) is None
    assert not_own(own(installation=None, remote_id=3, attempt=None), installation=None, remote_id=7, attempt=2)
    assert not_own(own(), installation=None, remote_id=7, attempt=2)  # a newer installation's job
