"""The one step loop: prepare, exec and poll each work run by run through ``run_step``.

For every run: claim it (another process has it: skip, named by --remote-id: say so), ask the
step's throttle (held back: the site's later runs wait too), open the site's transport once
per pass (closed in a ``finally``), do the step's work; a dropped link pauses this run and the
site's later ones in ``auth``; any other failure is this run's own — the step records it on the
run (its state, fault and message) and the loop goes on with the next run. The task switch
(`scbundle tasks off STEP`) and the registry of steps in flight (`tasks wait`) are honoured here
too, so no step can forget them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scbundle.core.app import App
from scbundle.core.errors import LinkDownError, ScbundleError
from scbundle.core.states import Fault
from scbundle.core.text import printable
from scbundle.db import journal
from scbundle.db.claims import Claim, claim_run, unclaimed
from scbundle.db.models import RemoteRun
from scbundle.ops.auth import mark_auth
from scbundle.ops.links import all_off, site_off, when_down
from scbundle.ops.tasks import in_flight, is_enabled
from scbundle.site.link import Transport, live_transport
from scbundle.steps.common import StepReport

log = logging.getLogger("scbundle.steps")


@dataclass(frozen=True)
class RunFailed:
    """A run whose step failed and could not even record why (the database itself failed)."""

    remote_id: int
    error: str
    state: str = "?"


class RunStep(ABC):
    """One step as the loop drives it."""

    name: str  # prepare, exec, poll: also the task switch's name
    states: tuple[str, ...]  # the states a run must be in to be claimed
    needs_link: bool = False

    def site_lock(self, app: App, run: RemoteRun) -> str | None:
        """The per-site lock a throttle needs while this run is worked on (None: no throttle)."""
        return None

    def hold(self, app: App, run: RemoteRun) -> str | None:
        """Why this run (and the site's later ones) must wait for now: a throttle's message."""
        return None

    @abstractmethod
    def work(self, app: App, claim: Claim, transport: Transport | None) -> Any:
        """The step on one claimed run; returns its result record."""

    @abstractmethod
    def failed(self, app: App, claim: Claim, err: Exception) -> Any:
        """Record ``err`` on the run (state, fault, message) and return its result record."""


def run_step(
    app: App, step: RunStep, runs: Sequence[RemoteRun], *, named: bool = False, stop: Callable[[], bool] | None = None
) -> StepReport:
    """``step`` over ``runs`` (read before the claims: each is claimed and read again);
    ``named``: the runs were named by --remote-id, so a run another process holds is reported;
    ``stop``: asked before each run (the daemon's signal), the pass ends at a run boundary."""
    if not is_enabled(app, step.name):
        return StepReport([], [], skipped=f"{step.name} is switched off (`scbundle tasks on {step.name}`)")
    results: list[Any] = []
    paused: list[int] = []
    held: list[str] = []
    reason: str | None = None
    waiting: set[str] = set()  # sites whose later runs wait: link down, or a throttle
    journaled: set[str] = set()  # sites whose throttle this pass has told the journal of
    transports: dict[str, Transport] = {}
    offs: dict[str, frozenset[str]] = {}
    with in_flight(app, step.name):
        try:
            for n, run in enumerate(runs):
                if stop is not None and stop():
                    break
                if run.site in waiting:
                    continue
                try:
                    with claim_run(app.db, run.remote_id, step.states, site_lock=step.site_lock(app, run)) as claim:
                        if claim is None:  # another process has it, or it moved on meanwhile
                            if named:
                                held.append(str(unclaimed(app.db, run.remote_id, step.states, step.name)))
                            continue
                        why = step.hold(app, claim.run)
                        if why or run.site not in journaled:  # a hold begun or ended: one event (the notifier's clock)
                            journaled.add(run.site)
                            _journal_throttle(app, step.name, run, why)
                        if why:
                            held.append(why)
                            waiting.add(run.site)
                            continue
                        off = frozenset[str]()
                        if step.needs_link:
                            if run.site not in offs:  # front ends out of service: read once a pass
                                offs[run.site] = site_off(app, run.site)
                            off = offs[run.site]
                            why = all_off(app, run.site, off)
                            if why:  # the run stays where it is: `link host on` and the next pass moves it
                                held.append(why)
                                waiting.add(run.site)
                                continue
                        try:
                            t = None
                            if step.needs_link:
                                t = transports.get(run.site)
                                if t is None:
                                    t = transports[run.site] = live_transport(run.site, app.site(run.site), off)
                            results.append(step.work(app, claim, t))
                        except LinkDownError as err:
                            waiting.add(run.site)
                            decision = when_down(app, run.site, off)
                            if decision.action == "leave":  # another local host has a live link: its step does this site's work
                                held.append(f"site {run.site}: no link from here ({err}); left to {', '.join(decision.to)}, whose link is up")
                                continue
                            reason = str(err)
                            paused += mark_auth(app, [run.remote_id], f"{step.name}: {err}", by=step.name, claimed=True)
                            later = [r.remote_id for r in runs[n + 1 :] if r.site == run.site]
                            paused += mark_auth(app, later, f"{step.name}: {err}", by=step.name)
                            waiting.add(run.site)
                        except Exception as err:  # noqa: BLE001 - one run's failure is that run's
                            log.debug("%s of remote_id %s failed", step.name, run.remote_id, exc_info=True)
                            results.append(step.failed(app, claim, err))
                except LinkDownError:
                    raise
                except Exception as err:  # noqa: BLE001 - recording the failure failed too (the database)
                    log.warning("%s of remote_id %s: %s", step.name, run.remote_id, err, exc_info=True)
                    results.append(RunFailed(run.remote_id, printable(f"{step.name}: {type(err).__name__}: {err}")))
        finally:
            for t in transports.values():
                t.close()
    return StepReport(results, paused, reason, held=held)


def _journal_throttle(app: App, step: str, run: RemoteRun, why: str | None) -> None:
    """A throttle that starts or stops holding ``step`` back on the run's site, journaled; the
    step goes on if the journal cannot be written (the database said why, in the log)."""
    try:
        with app.db.read_session() as s:  # most passes change nothing: no write transaction then
            last = journal.last_hold_event(s, run.site, step)
        if (last is not None and last.dst == "held") == (why is not None):
            return
        with app.db.session() as s:  # and asked again inside it
            journal.throttle_changed(s, site=run.site, step=step, held=why, label=run.label)
    except ScbundleError as err:
        log.warning("%s: throttle event of site %s not journaled: %s", step, run.site, err)


def describe(err: BaseException) -> str:
    """An error in one line for a run's message: a scbundle error as it says itself, anything
    else with its type (an OSError with its errno's words)."""
    if isinstance(err, ScbundleError):
        return str(err.args[0]) if err.args else type(err).__name__  # the run's own line names its remote_id
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}" + (f": {err.filename}" if err.filename else "")
    return f"{type(err).__name__}: {err}"


def fault_of(err: BaseException) -> int:
    """The fault a failure reads as: a scbundle error's own, a system call's 2, else 4 (a bug)."""
    if isinstance(err, ScbundleError):
        return int(err.fault)
    if isinstance(err, OSError):
        return int(Fault.SYSTEM)
    return int(Fault.PROGRAM)
