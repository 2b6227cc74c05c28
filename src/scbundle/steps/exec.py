"""exec: ship a pending run's bundle, push only the missing inputs, submit. pending -> run.

Each step is idempotent, so exec can be re-run after a crash at any point: the bundle and
inputs are re-sent only where absent, and the job is submitted under a deterministic name
that the scheduler (or the local job registry) answers with the job already submitted.
Costs a fixed number of link invocations per run, whatever the number of components.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from sqlalchemy import update

from scbundle.core.app import App
from scbundle.core.errors import (
    CommandError,
    LinkDownError,
    ScbundleError,
    SiteUnsafeError,
    UnsafeNameError,
)
from scbundle.core.failpoints import failpoint
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.db.claims import claim_run, unclaimed
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import select_runs
from scbundle.ops.throttle import exec_hold
from scbundle.site import jobs
from scbundle.site.layout import roots_args, tool_argv
from scbundle.site.link import Transport, live_transport, transport_for
from scbundle.site.schedulers import scheduler_for
from scbundle.site.tools import ensure_tools
from scbundle.site.transfer import write_push_tar, write_text_tar
from scbundle.steps.common import StepReport, submit_context


class BundleMissing(ScbundleError):
    """The prepared bundle is gone from the workdir: nothing was sent, the run stays pending
    (with this fault) until `scbundle prepare` builds it again."""

    fault = Fault.SYSTEM


@dataclass(frozen=True)
class Executed:
    remote_id: int
    job_id: str | None
    pushed_files: int
    pushed_bytes: int
    invocations: int
    error: str | None = None
    note: str | None = None  # the tools were shipped (again) on the way
    still_pending: bool = False  # refused before anything was queued: the run stays pending, with the fault


def split_by_size(files: list[tuple[str, str]], sizes: dict[str, int], k: int) -> list[list[tuple[str, str]]]:
    """Deal files to ``k`` streams, largest first, so the streams carry similar byte counts."""
    groups: list[list[tuple[str, str]]] = [[] for _ in range(max(1, min(k, len(files))))]
    loads = [0] * len(groups)
    for pair in sorted(files, key=lambda p: -sizes.get(p[1], 0)):
        i = loads.index(min(loads))
        groups[i].append(pair)
        loads[i] += sizes.get(pair[1], 0)
    return groups


def push_files(t: Transport, argv: list[str], files: list[tuple[str, str]], *, streams: int, on_file=None) -> None:
    """A few tar streams in parallel over the link, each into the remote unpacker."""
    sizes = {remote: os.stat(local).st_size for local, remote in files}
    groups = split_by_size(files, sizes, streams)
    if len(groups) == 1:
        t.stream_in(argv, lambda out: write_push_tar(out, groups[0], on_file=on_file))
        return
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(t.stream_in, argv, lambda out, g=g: write_push_tar(out, g, on_file=on_file)) for g in groups]
        errors = [f.exception() for f in futures]
    for err in errors:  # a dropped link outranks any other failure: the run must go to auth
        if isinstance(err, LinkDownError):
            raise err
    for err in errors:
        if err is not None:
            raise err


def _read_requirements(path_base: Path) -> list[tuple[str, str, int]]:
    rows = []
    for line in (path_base / "requirements.tsv").read_text().splitlines():
        local, remote, size = line.split("\t")
        rows.append((local, remote, int(size)))
    return rows


def _bundle_files(path_base: Path, run_dir: str) -> dict[str, bytes]:
    return {
        f"{run_dir}/{p.relative_to(path_base)}": p.read_bytes()
        for p in sorted(path_base.rglob("*"))
        if p.is_file() and not p.relative_to(path_base).parts[0] == "returned"
    }


def exec_run(app: App, run: RemoteRun, *, progress: bool = True, transport: Transport | None = None) -> Executed:
    t = transport or transport_for(run.site, app.site(run.site))
    before = t.invocations
    sched = scheduler_for(run.site, app.site(run.site))
    site = app.site(run.site)
    ctx = submit_context(app, run)
    py, tools, roots = site.python, ctx.tools_dir, roots_args(site)
    path_base = Path(run.path_base or "")
    if not (path_base / "bundle.json").is_file():
        raise BundleMissing(f"bundle {path_base} is missing: run `scbundle prepare {run.stage} --remote-id {run.remote_id}` again", remote_id=run.remote_id)

    note = ensure_tools(t, site)  # the tools are this account's and this installation's, or nothing runs
    bundle = tool_argv(py, tools, "sc_remote.py", "unpack", *roots, mkdirs=[ctx.run_dir])  # a run directory of this account's alone
    t.stream_in(bundle, lambda out: write_text_tar(out, _bundle_files(path_base, ctx.run_dir)))
    reqs = _read_requirements(path_base)
    listing = "".join(f"{remote}\t{size}\n" for _, remote, size in reqs).encode()
    missing_out = t.run(tool_argv(py, tools, "sc_remote.py", "missing", *roots), input=listing).text
    wanted = {line.split("\t")[0] for line in missing_out.splitlines() if line}
    to_push = [(local, remote) for local, remote, _ in reqs if remote in wanted]
    nbytes = sum(size for _, remote, size in reqs if remote in wanted)
    if to_push:
        argv = tool_argv(py, tools, "sc_remote.py", "unpack", *roots)
        show = progress and app.console.is_terminal
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=app.console, transient=True, disable=not show) as bar:  # fmt: skip
            task = bar.add_task(f"push {len(to_push)} files", total=nbytes)
            push_files(t, argv, to_push, streams=site.push_streams, on_file=lambda n: bar.advance(task, n))
    failpoint("exec.pushed")
    job_id = jobs.submit(t, sched, ctx).job_id
    failpoint("exec.submitted")
    return Executed(run.remote_id, job_id, len(to_push), nbytes, t.invocations - before, note=note)


def exec_runs(app: App, *, remote_id: int | None = None, label: str | None = None, progress: bool = True) -> StepReport:
    from scbundle.ops.auth import mark_auth, mark_auth_in
    from scbundle.ops.tasks import in_flight, is_enabled

    if not is_enabled(app, "exec"):
        return StepReport([], [], skipped="exec is switched off (`scbundle tasks on exec`)")
    with in_flight(app, "exec"):
        with app.db.read_session() as s:
            runs = select_runs(s, [RunState.PENDING], remote_id, label, "exec")
        if remote_id is None:  # a run the scheduler refused waits for the operator: `exec --remote-id N`
            runs = [r for r in runs if not r.fault]
        results: list[Executed] = []
        paused: list[int] = []
        reason = None
        transports: dict[str, Transport] = {}
        held: list[str] = []
        done_sites: set[str] = set()  # link down, or throttled: the site's later runs wait
        for n, run in enumerate(runs):
            if run.site in done_sites:
                continue
            site_lock = f"exec:{run.site}" if app.site(run.site).max_in_flight is not None else None
            with claim_run(app.db, run.remote_id, [RunState.PENDING], site_lock=site_lock) as claim:
                if claim is None:  # another process has it, or it moved on meanwhile
                    if remote_id is not None:
                        held.append(str(unclaimed(app.db, run.remote_id, [RunState.PENDING], "exec")))
                    continue
                mine = claim.run  # as read under the claim
                if mine.fault and remote_id is None:
                    continue
                with claim.session() as s:
                    why = exec_hold(app, s, mine.site)
                if why:
                    held.append(why)
                    done_sites.add(mine.site)
                    continue
                t = transports.get(mine.site)
                try:
                    if t is None:
                        t = transports[mine.site] = live_transport(mine.site, app.site(mine.site))
                    res = exec_run(app, mine, progress=progress, transport=t)
                except LinkDownError as err:  # pause this run and every later one on the same site
                    reason = str(err)
                    with claim.session() as s:
                        paused += mark_auth_in(s, [mine.remote_id], f"exec: {err}")
                    paused += mark_auth(app, [r.remote_id for r in runs[n + 1 :] if r.site == run.site], f"exec: {err}")
                    done_sites.add(mine.site)
                    continue
                except (jobs.SubmitRefused, BundleMissing, SiteUnsafeError, UnsafeNameError) as err:
                    # nothing was queued (nor run, for a site directory or tool another account
                    # could change): the run stays pending, with the fault, for the operator
                    with claim.session() as s:
                        r = s.get(RemoteRun, run.remote_id)
                        assert r is not None
                        if r.state == RunState.PENDING:
                            r.fault, r.message = int(err.fault), f"exec: {err}"[:2000]
                    results.append(Executed(run.remote_id, None, 0, 0, 0, error=str(err), still_pending=True))
                    continue
                except (CommandError, ScbundleError, OSError) as err:
                    with claim.session() as s:
                        r = s.get(RemoteRun, run.remote_id)
                        assert r is not None
                        if r.state == RunState.PENDING:
                            r.state, r.prev_state = RunState.ERROR, RunState.PENDING
                            r.fault = int(getattr(err, "fault", Fault.SYSTEM))
                            r.message = f"exec: {err}"[:2000]
                    results.append(Executed(run.remote_id, None, 0, 0, 0, error=str(err)))
                    continue
                with claim.session() as s:
                    r = s.get(RemoteRun, run.remote_id)
                    assert r is not None
                    if r.state == RunState.PENDING:
                        r.state, r.job_id, r.fault, r.message = RunState.RUN, res.job_id, 0, None
                        s.execute(
                            update(RemoteComponent)
                            .where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.PENDING)
                            .values(state=ComponentState.RUN, attempts=RemoteComponent.attempts + 1)
                        )
            results.append(res)
        for t in transports.values():
            t.close()
        return StepReport(results, paused, reason, held=held)
