"""The daemon: prepare, exec, poll and advance in a loop, honouring the task switches, until
SIGINT or SIGTERM, which stop it at the next step boundary (a step in progress always finishes)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from scbundle.core.app import App
from scbundle.core.errors import ScbundleError, StateError, UnsafeNameError
from scbundle.core.states import RunState
from scbundle.db.models import RemoteRun


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} scbundle daemon: {msg}", flush=True)


def one_pass(app: App, *, poll_seconds: float, label: str | None, prepare: bool, stop: threading.Event) -> None:
    from scbundle.ops.tasks import is_enabled
    from scbundle.ops.throttle import HeldBack
    from scbundle.steps.exec import exec_runs
    from scbundle.steps.poll import poll_runs
    from scbundle.steps.prepare import prepare as do_prepare

    steps: list[tuple[str, Callable[[], None]]] = []

    def prepare_step() -> None:
        if not is_enabled(app, "prepare"):
            return
        with app.db.read_session() as s:
            q = select(RemoteRun).where(RemoteRun.state == RunState.NEW).order_by(RemoteRun.remote_id)
            if label:
                q = q.where(RemoteRun.label == label)
            runs = [(r.remote_id, r.stage, r.site) for r in s.scalars(q)]
        held: set[str] = set()
        for rid, stage, site in runs:
            if stop.is_set():
                return
            if site in held:
                continue
            try:
                p = do_prepare(app, remote_id=rid, stage=stage, states=[RunState.NEW])
            except HeldBack as err:  # the site's throttle: its other new runs wait for the next pass
                held.add(site)
                _log(f"prepare held back: {err.args[0]}")
                continue
            except (StateError, UnsafeNameError) as err:  # another process took it meanwhile; a bad old label (now error)
                _log(f"prepare skipped remote_id {rid}: {err}")
                continue
            _log(f"prepared remote_id {rid}: {p.n_components} components, {p.n_missing} missing")

    def report(step: str, rep, ok: Callable[[object], str]) -> None:
        for r in rep.results:
            _log(f"{step} remote_id {r.remote_id}: " + (f"error {r.error}" if r.error else ok(r)))
        if rep.auth:
            _log(f"link down, remote_id {rep.auth} -> auth: {rep.auth_reason}")
        for why in dict.fromkeys(rep.held):
            _log(f"{step} held back: {why}")

    def exec_step() -> None:
        report("exec", exec_runs(app, label=label, progress=False), lambda r: f"job {r.job_id}")

    def advance_step() -> None:
        from scbundle.steps.advance import advance

        for r in advance(app, label=label).runs:  # nothing when switched off (`tasks off advance`)
            _log(f"advance remote_id {r.remote_id}: {r.note}")

    def poll_step() -> None:
        report("poll", poll_runs(app, label=label, min_age_s=poll_seconds), lambda r: f"{r.state} ({r.job_state})")

    if prepare:
        steps.append(("prepare", prepare_step))
    steps += [("exec", exec_step), ("poll", poll_step), ("advance", advance_step)]
    for name, step in steps:
        if stop.is_set():
            return
        try:
            step()
        except ScbundleError as err:
            _log(f"{name}: {err}")


def run_daemon(app: App, *, once: bool = False, loop_seconds: float | None = None, poll_seconds: float | None = None) -> None:
    settings = app.config.daemon
    loop_s = settings.loop_seconds if loop_seconds is None else loop_seconds
    poll_s = settings.poll_seconds if poll_seconds is None else poll_seconds
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stop.is_set():
            _log(f"{signal.Signals(signum).name}: stopping at the next step boundary")
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    _log(f"started: loop every {loop_s:g} s, poll runs older than {poll_s:g} s")
    try:
        while not stop.is_set():
            one_pass(app, poll_seconds=poll_s, label=settings.label, prepare=settings.prepare, stop=stop)
            if once:
                break
            stop.wait(loop_s)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _log("stopped")
