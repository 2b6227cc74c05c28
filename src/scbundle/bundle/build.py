"""Assembling a bundle's files from component specs (pure), and writing them atomically."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from ..stages.base import ComponentSpec
from .allocation import ResourceRequest
from .multiprog import ConfigPart, deal_by_cost, pack_configs
from .render import environment, render


def job_name(stage: str, remote_id: int, attempt: int) -> str:
    """Deterministic: a re-run exec finds the job it already submitted by this name."""
    return f"scb-{stage}-{remote_id}-a{attempt}"


def remote_run_dir(permanent_root: str, stage: str, remote_id: int, attempt: int) -> str:
    return f"{permanent_root.rstrip('/')}/runs/{stage}.{remote_id}.a{attempt}"


def remote_tools_dir(permanent_root: str, tools_hash: str) -> str:
    return f"{permanent_root.rstrip('/')}/tools/{tools_hash}"


@dataclass(frozen=True)
class BundlePlan:
    remote_id: int
    stage: str
    attempt: int
    run_dir: str
    tools_dir: str
    python: str
    cores_per_node: int
    job_template: str  # e.g. "slurm/job.sh.j2"
    attempts: int = 2  # tries of a failing command inside the job
    command_timeout: float | None = None  # seconds a command may run before it is stopped (fault 6)
    account: str | None = None
    partition: str | None = None


def _tsv(rows: Sequence[Sequence[object]]) -> str:
    text = "".join("\t".join(map(str, row)) + "\n" for row in rows)
    # one count each instead of a test a cell: a tab or newline inside a cell adds one
    if text.count("\n") != len(rows) or text.count("\t") != sum(len(row) - 1 for row in rows):
        for row in rows:
            for cell in row:
                if "\t" in str(cell) or "\n" in str(cell):
                    raise BundleError(f"a path holds a tab or newline: {cell!r}")
    return text


_quote = functools.lru_cache(maxsize=1 << 16)(shlex.quote)  # the same words recur in every command


def _shell_line(argv: Sequence[str]) -> str:
    return " ".join(map(_quote, argv))


def assemble(specs: Sequence[ComponentSpec], request: ResourceRequest, plan: BundlePlan) -> dict[str, str]:
    """All files of the bundle, by relative path. Pure: same specs, same bytes."""
    if not specs:
        raise BundleError("nothing to prepare: no component has its inputs", remote_id=plan.remote_id)
    name = job_name(plan.stage, plan.remote_id, plan.attempt)
    reqs: dict[str, tuple[str, str, int]] = {}
    for spec in specs:
        for r in spec.inputs:
            seen = reqs.get(r.remote)
            if seen is not None and seen[0] != r.local:
                raise BundleError(f"remote path {r.remote} is wanted from two local files: {seen[0]} and {r.local}")
            reqs[r.remote] = (r.local, r.remote, r.size)
    out_dirs = sorted({d for spec in specs for d in spec.out_dirs})
    words = "\x1f".join(itertools.chain.from_iterable(itertools.chain(s.command, s.post, s.out_dirs) for s in specs))
    if "\n" in words or "\r" in words or "\0" in words:  # then find the word, to name it
        for spec in specs:
            for word in (*spec.command, *spec.post, *spec.out_dirs):
                if "\n" in word or "\r" in word or "\0" in word:
                    raise BundleError(f"stage_id {spec.stage_id}: argument {word!r} holds a newline or NUL", remote_id=plan.remote_id)

    env = environment()
    line_t = env.get_template("srun/line.j2")
    common = {"python": plan.python, "tools_dir": plan.tools_dir, "run_dir": plan.run_dir}
    ranks = deal_by_cost([s.cost for s in specs], request.nranks)

    def line(task: int, offset: int, ids: str) -> str:
        return line_t.render(task=task, offset=offset, ids=ids, **common).rstrip("\n")

    def header(index: int, offset: int) -> str:
        return render("srun/multiprog.conf.j2", part_name=f"part-{index:03d}.conf", remote_id=plan.remote_id, job_name=name, offset=offset)

    parts: list[ConfigPart] = pack_configs(ranks, line, header, ranks_per_node=max(1, plan.cores_per_node // request.threads))
    files: dict[str, str] = {f"multiprog/{part.name}": part.text for part in parts}
    files["requirements.tsv"] = _tsv(sorted(reqs.values(), key=lambda r: r[1]))
    files["pre.cmds"] = "".join(_shell_line(["mkdir", "-p", d]) + "\n" for d in out_dirs)
    files["commands.cmds"] = "".join(_shell_line(s.command) + "\n" for s in specs)
    files["post.cmds"] = "".join(_shell_line(s.post) + "\n" for s in specs)
    files["products.tsv"] = _tsv([(i, r, loc) for i, s in enumerate(specs) for r, loc in s.products])
    files["components.tsv"] = _tsv([(i, s.stage_id) for i, s in enumerate(specs)])
    meta = {
        "remote_id": plan.remote_id,
        "stage": plan.stage,
        "attempt": plan.attempt,
        "job_name": name,
        "nranks": request.nranks,
        "threads": request.threads,
        "nodes": request.nodes,
        "walltime": request.walltime,
        "n_components": len(specs),
        "n_configs": len(parts),
        "ranks_used": sum(p.ntasks for p in parts),
        "walltime_seconds": request.seconds,
        "attempts": plan.attempts,
        "command_timeout": plan.command_timeout,
    }
    files["bundle.json"] = json.dumps(meta, indent=1, sort_keys=True) + "\n"
    files["job.sh"] = render(
        plan.job_template,
        job_name=name,
        remote_id=plan.remote_id,
        stage=plan.stage,
        attempt=plan.attempt,
        n_components=len(specs),
        request=request,
        cores_per_node=plan.cores_per_node,
        parts=parts,
        threads=request.threads,
        walltime_seconds=request.seconds,
        account=plan.account,
        partition=plan.partition,
        **common,
    )
    return files


def write_bundle(path_base: Path, files: dict[str, str]) -> None:
    """Write into a temporary sibling, then swap it in: a crash leaves the old bundle or the new one."""
    path_base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path_base.name}.", dir=path_base.parent))
    try:
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        (tmp / "job.sh").chmod(0o755)
        old = None
        if path_base.exists():
            old = path_base.with_name(f".{path_base.name}.old.{os.getpid()}")
            os.replace(path_base, old)
        os.replace(tmp, path_base)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
