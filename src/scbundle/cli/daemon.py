"""The daemon: prepare, exec, poll and advance in a loop, honouring the task switches, until
SIGINT or SIGTERM, which stop it at the next step boundary (a step in progress always finishes).

Before each step, and every second while it waits, it checks that its database is still the
one it started with (db/identity.py): a SQLite file deleted or replaced under it (its open
connection would go on writing into the deleted file, lost), or a database whose installation
id changed or vanished, stops it with one line and a non-zero exit."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.core.app import App
from scbundle.core.errors import DatabaseError, ScbundleError
from scbundle.core.states import RunState
from scbundle.core.text import printable
from scbundle.db import journal
from scbundle.db.identity import DatabaseIdentity, DatabaseReplaced, check_same, identity
from scbundle.ops.notify import Notifier

log = logging.getLogger("scbundle.daemon")
CHECK_EVERY_S = 1.0  # while waiting between passes: how often the database's identity is checked


def _log(msg: str) -> None:
    log.info("%s", printable(msg, multiline=True))


def configure_logging() -> None:
    """The daemon's lines on stdout (systemd's journal keeps them), stamped."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s scbundle daemon: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("scbundle")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _still_mine(app: App, known: DatabaseIdentity, before: str) -> None:
    try:
        check_same(app.db, known)
    except DatabaseReplaced as err:
        raise DatabaseReplaced(f"{err}; the daemon stopped before {before}, writing nothing more") from None


def one_pass(
    app: App, *, poll_seconds: float, label: str | None, prepare: bool, stop: threading.Event, known: DatabaseIdentity,
    notifier: Notifier | None = None,
) -> None:
    from scbundle.steps.exec import exec_runs
    from scbundle.steps.poll import poll_runs
    from scbundle.steps.prepare import prepare_runs

    steps: list[tuple[str, Callable[[], None]]] = []

    def heartbeat_step() -> None:  # this host's masters, for the other local hosts on this database
        from scbundle.ops.links import beat_all

        for line in beat_all(app):
            _log(line)

    def prepare_step() -> None:
        rep = prepare_runs(app, label=label, stop=stop.is_set)
        report("prepare", rep, lambda p: f"{p.n_components} components, {p.n_missing} missing" if p.state == RunState.PENDING else str(p.state))

    def report(step: str, rep, ok: Callable[[object], str]) -> None:
        for r in rep.results:
            if r.error:
                _log(f"{step} remote_id {r.remote_id}: error {r.error}")
            else:
                _log(f"{'prepared' if step == 'prepare' else step} remote_id {r.remote_id}: {ok(r)}")
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

    def notify_step() -> None:  # [notify]: what the journal tells, sent once; a failed send is retried later
        assert notifier is not None
        rep = notifier.step()
        for line in rep.sent:
            _log(f"notify: {line}")
        for line in rep.failed:
            _log(f"notify: {line}")

    steps.append(("link heartbeat", heartbeat_step))
    if prepare:
        steps.append(("prepare", prepare_step))
    steps += [("exec", exec_step), ("poll", poll_step), ("advance", advance_step)]
    if notifier is not None:
        steps.append(("notify", notify_step))
    for name, step in steps:
        if stop.is_set():
            return
        try:
            _still_mine(app, known, f"its {name} step")
            step()
        except DatabaseReplaced:
            raise
        except ScbundleError as err:
            _log(f"{name}: {err}")
        except Exception as err:  # noqa: BLE001 - the daemon never dies of one step's failure
            log.exception("%s failed", name)
            _log(f"{name}: {type(err).__name__}: {err} (the next pass tries again)")


def _wait(app: App, stop: threading.Event, seconds: float, known: DatabaseIdentity) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(CHECK_EVERY_S, left)):
            return
        try:
            _still_mine(app, known, "its next pass")
        except DatabaseReplaced:
            raise
        except DatabaseError:  # cannot be reached now (a server restarting): the next step says so
            pass


def run_daemon(app: App, *, once: bool = False, loop_seconds: float | None = None, poll_seconds: float | None = None) -> None:
    settings = app.config.daemon
    loop_s = settings.loop_seconds if loop_seconds is None else loop_seconds
    poll_s = settings.poll_seconds if poll_seconds is None else poll_seconds
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stop.is_set():
            _log(f"{signal.Signals(signum).name}: stopping at the next step boundary")
        stop.set()

    configure_logging()
    journal.origin(daemon=True)  # its events say so
    known = identity(app.db)
    notifier = Notifier(app) if app.config.notify.rules else None
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    _log(f"started: database installation {known.installation_id}, loop every {loop_s:g} s, poll runs older than {poll_s:g} s"
         + (f", notifying {len(app.config.notify.rules)} rule(s)" if notifier else ""))
    try:
        while not stop.is_set():
            one_pass(app, poll_seconds=poll_s, label=settings.label, prepare=settings.prepare, stop=stop, known=known,
                     notifier=notifier)
            if once:
                break
            _wait(app, stop, loop_s, known)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _log("stopped")


@cli.command()
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--loop-seconds", type=click.FloatRange(0, 86400), default=None, help="pause between passes (config: daemon.loop_seconds)")
@click.option("--poll-seconds", type=click.FloatRange(0, None), default=None, help="poll a run only when last_poll is older (config: daemon.poll_seconds)")
@pass_ctx
def daemon(c: Ctx, once: bool, loop_seconds: float | None, poll_seconds: float | None) -> None:
    """prepare, exec, poll and advance in a loop until SIGINT/SIGTERM, stopping at a step boundary."""
    run_daemon(c.app(), once=once, loop_seconds=loop_seconds, poll_seconds=poll_seconds)
