"""`scbundle notify`: try the [notify] addresses, and see the outbox (the daemon sends it)."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import echo, emit_json
from scbundle.core.errors import ConfigError


@cli.group()
def notify() -> None:
    """Notifications ([notify] rules, Apprise URLs): sent by `scbundle daemon`."""


@notify.command("test")
@pass_ctx
def notify_test(c: Ctx) -> None:
    """Send a test message to every URL of every rule now (not through the outbox). Exit 1 when one fails."""
    from scbundle.core.app import utcnow
    from scbundle.db.journal import whoami
    from scbundle.ops.notify import send, targets

    app = c.app(schema=False)
    tgts = targets(app.config.notify)
    if not tgts:
        raise ConfigError(f"config {app.config.source}: no [[notify.rules]] with urls: nothing to test")
    bad = 0
    for t in dict((t.url, t) for t in tgts).values():  # one message a URL, however many rules name it
        why = send(t.url, "scbundle: test message", f"A test from `scbundle notify test` by {whoami()} at {utcnow():%Y-%m-%d %H:%M:%S} UTC.")
        echo(f"rule {t.rule} {t.shown}: " + ("sent" if why is None else f"FAILED: {why}"))
        bad += why is not None
    if bad:
        sys.exit(1)


@notify.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="rows not sent shown")
@pass_ctx
def notify_status(c: Ctx, as_json: bool, limit: int) -> None:
    """The outbox: how many notifications are pending, being sent, sent and failed; the last not sent."""
    from scbundle.ops.notify import outbox

    counts, rows = outbox(c.app(), limit=limit)
    if as_json:
        emit_json({"counts": counts, "not_sent": [asdict(r) for r in rows]})
        return
    echo(", ".join(f"{n} {state}" for state, n in counts.items()))
    for r in rows:
        err = f": {r.last_error}" if r.last_error else ""
        echo(f"#{r.id} {r.state} {r.kind} (journal event {r.event_id}), {r.attempts} attempt(s), next {r.next_try:%Y-%m-%d %H:%M:%S}{err}")
