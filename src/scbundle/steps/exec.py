"""exec: ship a pending run's bundle, push only the missing inputs, submit. pending -> run.

Inputs are known by content: the local side's sha256 of each (site/digests.py, cached by file
state), checked by the site against its manifest of what it holds (remote/sc_remote.py
missing), so an input re-made with the same size, or changed or purged on the site, is pushed
again. The bundle carries the same list (input-files.tsv) for the runner's last check.

Each step is idempotent, so exec can be re-run after a crash at any point: the bundle and
inputs are re-sent only where absent, and the job is submitted under a deterministic name
that the scheduler (or the local job registry) answers with the job already submitted.
Costs a fixed number of link invocations per run, whatever the number of components.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from sqlalchemy import update

from scbundle.core.app import App
from scbundle.core.errors import ScbundleError, SiteUnsafeError, UnsafeNameError
from scbundle.core.failpoints import failpoint
from scbundle.core.protocol import PROTOCOL as P
from scbundle.core.resources import content_hash
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.core.text import printable
from scbundle.db.claims import Claim
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run, move, select_runs
from scbundle.ops.throttle import exec_hold
from scbundle.site import jobs
from scbundle.site.digests import DigestCache, DigestStats
from scbundle.site.fanout import PushReport, push_fanout
from scbundle.site.layout import manifest_dir, roots_args, tool_argv
from scbundle.site.link import Transport, transport_for
from scbundle.site.schedulers import scheduler_for
from scbundle.site.tools import ensure_shipped, ensure_tools
from scbundle.site.transfer import write_text_tar
from scbundle.steps.common import StepReport, submit_context
from scbundle.steps.loop import RunStep, describe, fault_of, run_step


class BundleMissing(ScbundleError):
    """The prepared bundle is gone from the workdir: nothing was sent, the run stays pending
    (with this fault) until `scbundle prepare` builds it again."""

    fault = Fault.SYSTEM


class InputGone(ScbundleError):
    """A local input prepared into the bundle cannot be read now: nothing was sent."""

    fault = Fault.SYSTEM


@dataclass(frozen=True)
class Executed:
    remote_id: int
    job_id: str | None
    pushed_files: int
    pushed_bytes: int
    invocations: int
    error: str | None = None
    skipped: bool = False  # claimed, but left alone (a fault that waits for the operator)
    hashed_files: int = 0  # local inputs hashed by this exec (the rest came from the digest cache)
    site_hashed: int = 0  # files the site hashed (no manifest entry, or changed since it)
    warnings: tuple[str, ...] = ()
    note: str | None = None  # the tools were shipped (again) on the way
    still_pending: bool = False  # refused before anything was queued: the run stays pending, with the fault


@dataclass(frozen=True)
class InputCheck:
    """Which inputs the site must be sent, and what the site did to tell."""

    to_push: list[tuple[str, str]]  # (local, remote)
    nbytes: int
    site: dict  # sc_remote.py missing's counts: checked, by_manifest, hashed, hashed_bytes, missing


def push_files(t: Transport, argv: list[str], files: list[tuple[str, str]], *, streams: int, on_file=None, bundle_mb: float = 100) -> PushReport:
    """The files over ``t`` alone (no re-check): a few tar streams into the remote unpacker."""
    sizes = {remote: os.stat(local).st_size for local, remote in files}
    return push_fanout([t], argv, files, sizes, streams=streams, bundle_bytes=int(bundle_mb * (1 << 20)), on_file=on_file)


def input_listing(reqs: list[tuple[str, str, int]], cache: DigestCache, remote_id: int | None = None) -> tuple[bytes, dict[str, int], DigestStats]:
    """The 'remote_path<TAB>size<TAB>sha256' lines of the inputs as they are now (sizes from
    the files, not from prepare), and each remote path's size."""
    try:
        digests, stats = cache.digests(local for local, _, _ in reqs)
    except OSError as err:
        raise InputGone(f"an input cannot be read since prepare ({err}): `scbundle revert` the run after fixing it", remote_id=remote_id) from None
    sizes = {remote: digests[local].size for local, remote, _ in reqs}
    listing = "".join(f"{remote}\t{digests[local].size}\t{digests[local].sha256}\n" for local, remote, _ in reqs).encode()
    return listing, sizes, stats


def site_counts(stderr: bytes) -> dict:
    """The counts `sc_remote.py missing` reports on its last stderr line ({} if none)."""
    for line in reversed(stderr.decode("utf-8", "replace").splitlines()):
        if line.startswith("sc_remote.py missing: "):
            try:
                out = json.loads(line.split(": ", 1)[1])
            except ValueError:
                return {}
            return out if isinstance(out, dict) else {}
    return {}


def check_inputs(t: Transport, site, reqs: list[tuple[str, str, int]], listing: bytes, sizes: dict[str, int], *, tools: str) -> InputCheck:
    """One link call: the site answers which inputs (input_listing's lines) it lacks by content."""
    argv = tool_argv(site.python, tools, "sc_remote.py", "missing", *roots_args(site), "--manifest", manifest_dir(site))
    done = t.run(argv, input=listing)
    wanted = {line.rsplit("\t", 2)[0] for line in done.text.splitlines() if line}
    to_push = [(local, remote) for local, remote, _ in reqs if remote in wanted]
    return InputCheck(to_push, sum(sizes[r] for _, r in to_push), site_counts(done.stderr))


def _read_requirements(path_base: Path) -> list[tuple[str, str, int]]:
    rows = []
    for line in (path_base / P.REQUIREMENTS_TSV).read_text().splitlines():
        local, remote, size = line.split("\t")
        rows.append((local, remote, int(size)))
    return rows


LOCAL_ONLY = ("returned", P.REQUIREMENTS_TSV, P.PRODUCTS_TSV, "shipped")  # read by exec and poll here, never sent with the bundle


def _bundle_files(path_base: Path, run_dir: str) -> dict[str, bytes]:
    """What the site needs of the bundle: everything but the local side's own lists (the
    requirements and products hold local paths; 16 of the 43 MB of a 37,200-component bundle)."""
    return {
        f"{run_dir}/{p.relative_to(path_base)}": p.read_bytes()
        for p in sorted(path_base.rglob("*"))
        if p.is_file() and p.relative_to(path_base).parts[0] not in LOCAL_ONLY
    }


def _shipped_files(path_base: Path) -> tuple[str, dict[str, bytes]] | None:
    """The stage's shipped files the bundle was prepared with (its local copy) and their site
    directory; None for a stage that ships none (or a bundle made before them)."""
    target = json.loads((path_base / P.BUNDLE_JSON).read_text()).get("shipped_dir")
    if not target:
        return None
    root = path_base / "shipped"
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if content_hash(files) != target.rsplit("/", 1)[-1]:
        raise BundleMissing(f"bundle {path_base}: its copy of the stage's shipped files is not the one prepared for {target}: run `scbundle prepare` again")
    return target, files


def exec_run(app: App, run: RemoteRun, *, progress: bool = True, transport: Transport | None = None, digests: DigestCache | None = None) -> Executed:
    t = transport or transport_for(run.site, app.site(run.site))
    before = t.invocations
    sched = scheduler_for(run.site, app.site(run.site))
    site = app.site(run.site)
    ctx = submit_context(app, run)
    py, tools, roots = site.python, ctx.tools_dir, roots_args(site)
    path_base = Path(run.path_base or "")
    if not (path_base / P.BUNDLE_JSON).is_file():
        raise BundleMissing(f"bundle {path_base} is missing: run `scbundle prepare {run.stage} --remote-id {run.remote_id}` again", remote_id=run.remote_id)

    reqs = _read_requirements(path_base)
    cache = digests or DigestCache.for_workdir(app.config.workdir)
    try:
        listing, sizes, local = input_listing(reqs, cache, run.remote_id)  # local only: before anything is sent
    finally:
        if digests is None:
            cache.close()
    note = ensure_tools(t, site)  # the tools are this account's and this installation's, or nothing runs
    shipped = _shipped_files(path_base)
    if shipped is not None:  # the stage's own files, the version prepare built the commands with
        more = ensure_shipped(t, site, *shipped)
        note = "; ".join(n for n in (note, more) if n) or None
    files = _bundle_files(path_base, ctx.run_dir)
    files[f"{ctx.run_dir}/{P.INPUT_FILES_TSV}"] = listing  # what the runner checks before each component
    bundle = tool_argv(py, tools, "sc_remote.py", "unpack", *roots, mkdirs=[ctx.run_dir])  # a run directory of this account's alone
    t.stream_in(bundle, lambda out: write_text_tar(out, files))
    check = check_inputs(t, site, reqs, listing, sizes, tools=tools)
    to_push, nbytes = check.to_push, check.nbytes
    spread = 0  # invocations over the other hosts' masters
    if to_push:
        argv = tool_argv(py, tools, "sc_remote.py", "unpack", *roots, "--manifest", manifest_dir(site))
        lanes = t.transfer_transports()  # one a front end whose master is up
        show = progress and app.console.is_terminal

        def recheck(other: Transport) -> list[tuple[str, str]]:  # a host was lost: what is still missing, by content
            return check_inputs(other, site, reqs, listing, sizes, tools=tools).to_push

        try:
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          console=app.console, transient=True, disable=not show) as bar:  # fmt: skip
                task = bar.add_task(f"push {len(to_push)} files", total=nbytes)
                push_fanout(lanes, argv, to_push, sizes, streams=site.push_streams, bundle_bytes=int(site.push_bundle_mb * (1 << 20)),
                            recheck=recheck, on_file=lambda n: bar.advance(task, n))  # fmt: skip
        finally:
            spread = sum(x.invocations for x in lanes if x is not t)
    failpoint("exec.pushed")
    job_id = jobs.submit(t, sched, ctx).job_id
    failpoint("exec.submitted")
    return Executed(run.remote_id, job_id, len(to_push), nbytes, t.invocations - before + spread,
                    hashed_files=local.hashed, site_hashed=int(check.site.get("hashed", 0)), warnings=tuple(local.problems), note=note)  # fmt: skip


class ExecStep(RunStep):
    """exec as the step loop drives it: pending -> run."""

    name = "exec"
    states = (RunState.PENDING,)
    needs_link = True

    def __init__(self, *, named: bool, progress: bool) -> None:
        self.named, self.progress = named, progress
        self.digests: DigestCache | None = None  # opened at the first run that needs it, shared by all

    def close(self) -> None:
        if self.digests is not None:
            self.digests.close()
            self.digests = None

    def site_lock(self, app: App, run: RemoteRun) -> str | None:
        return f"exec:{run.site}" if app.site(run.site).max_in_flight is not None else None

    def hold(self, app: App, run: RemoteRun) -> str | None:
        with app.db.read_session() as s:
            return exec_hold(app, s, run.site)

    def work(self, app: App, claim: Claim, transport: Transport | None) -> Executed:
        run = claim.run
        if run.fault and not self.named:  # refused by the scheduler: waits for `exec --remote-id N`
            return Executed(run.remote_id, None, 0, 0, 0, error=None, skipped=True)
        if self.digests is None:
            self.digests = DigestCache.for_workdir(app.config.workdir)
        res = exec_run(app, run, progress=self.progress, transport=transport, digests=self.digests)
        with claim.session() as s:
            r = get_run(s, run.remote_id, [RunState.PENDING], "exec", lock=True)
            move(r, RunState.RUN, "exec", fault=0)
            r.job_id = res.job_id
            s.execute(
                update(RemoteComponent)
                .where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.PENDING)
                .values(state=ComponentState.RUN, attempts=RemoteComponent.attempts + 1)
            )
        return res

    def failed(self, app: App, claim: Claim, err: Exception) -> Executed:
        text = printable(f"exec: {describe(err)}")
        # nothing was queued (nor run, for a site directory or tool another account could
        # change, or a name an older scbundle let through): pending, with the fault, for the operator
        pending = isinstance(err, jobs.SubmitRefused | BundleMissing | InputGone | SiteUnsafeError | UnsafeNameError)
        with claim.session() as s:
            r = get_run(s, claim.run.remote_id, lock=True)
            if r.state == RunState.PENDING:
                if pending:
                    r.fault, r.message = int(err.fault), text[:2000]
                else:
                    move(r, RunState.ERROR, "exec", fault=fault_of(err), message=text)
        return Executed(claim.run.remote_id, None, 0, 0, 0, error=text, still_pending=pending)


def exec_runs(app: App, *, remote_id: int | None = None, label: str | None = None, progress: bool = True) -> StepReport:
    with app.db.read_session() as s:
        runs = select_runs(s, [RunState.PENDING], remote_id, label, "exec")
    if remote_id is None:  # a run the scheduler refused waits for the operator: `exec --remote-id N`
        runs = [r for r in runs if not r.fault]
    step = ExecStep(named=remote_id is not None, progress=progress)
    try:
        rep = run_step(app, step, runs, named=remote_id is not None)
    finally:
        step.close()
    return replace(rep, results=[r for r in rep.results if not getattr(r, "skipped", False)])
