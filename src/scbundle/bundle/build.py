"""Assembling a bundle's files from component specs (pure), and writing them atomically."""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import shlex
import shutil
import tempfile
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.multiprog import ConfigPart, deal_by_cost, pack_configs
from scbundle.bundle.render import environment, render
from scbundle.core.errors import BundleError
from scbundle.core.protocol import PROTOCOL as P
from scbundle.core.resources import boot_code, tool_digests
from scbundle.site.layout import job_name
from scbundle.stages.base import ComponentSpec


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
    # the stage's fault policy: exit code -> fault, and the faults tried again inside the job
    fault_map: tuple[tuple[int, int], ...] = tuple(sorted(P.DEFAULT_FAULT_MAP.items()))
    retry_faults: tuple[int, ...] = tuple(sorted(P.DEFAULT_RETRY_FAULTS))
    installation: str | None = None  # the database's installation id (None: a run named before them)
    boot: str = field(default_factory=boot_code)  # the tool bootstrap the job script verifies its tools with
    digests: str = field(default_factory=tool_digests)  # "name=sha256,..." of this installation's tools
    shipped_dir: str | None = None  # the stage's shipped files on the site (Stage.shipped_files), if any
    shipped_digests: str = ""  # "name=sha256,..." of them: the job script verifies them at its start


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


def _check_words(specs: Sequence[ComponentSpec], remote_id: int) -> None:
    words = "\x1f".join(itertools.chain.from_iterable(itertools.chain(s.command, s.post, s.out_dirs) for s in specs))
    if "\n" in words or "\r" in words or "\0" in words:  # then find the word, to name it
        for spec in specs:
            for word in (*spec.command, *spec.post, *spec.out_dirs):
                if "\n" in word or "\r" in word or "\0" in word:
                    raise BundleError(f"stage_id {spec.stage_id}: argument {word!r} holds a newline or NUL", remote_id=remote_id)


class _Buffer(io.StringIO):
    """A text file in memory that keeps its text when closed."""

    def close(self) -> None:
        pass


class BundleWriter:
    """Writes a bundle's files. The per-component files are written as the specs come, a chunk
    at a time, so a bundle of a million components never holds all its specs, nor all its text,
    at once; what needs every component (the requirements, each once; the output directories;
    the dealing to ranks, the configs, the job script) is written by finish(), from what add()
    kept: the requirements, the directories and one cost a component."""

    PER_COMPONENT = P.PER_COMPONENT

    def __init__(self, plan: BundlePlan, open_text: Callable[[str], TextIO]) -> None:
        self.plan = plan
        self._open = open_text
        self._out = {name: open_text(name) for name in self.PER_COMPONENT}
        self._reqs: dict[str, tuple[str, str, int]] = {}  # in first-seen order: inputs.tsv numbers them so
        self._req_no: dict[str, int] = {}
        self._out_dirs: set[str] = set()
        self.costs = array("d")  # a cost a component, in index order
        self.max_threads = 0  # the most threads a component of its own asks for (ComponentSpec.threads)

    @property
    def n_components(self) -> int:
        return len(self.costs)

    def add(self, specs: Sequence[ComponentSpec]) -> None:
        """The next components, in index order."""
        _check_words(specs, self.plan.remote_id)
        numbers = self._req_no
        refs = []
        for spec in specs:
            mine = []
            for r in spec.inputs:
                seen = self._reqs.get(r.remote)
                if seen is None:
                    numbers[r.remote] = len(numbers)
                elif seen[0] != r.local:
                    raise BundleError(f"remote path {r.remote} is wanted from two local files: {seen[0]} and {r.local}")
                self._reqs[r.remote] = (r.local, r.remote, r.size)
                mine.append(numbers[r.remote])
            refs.append(",".join(map(str, mine)))
            self._out_dirs.update(spec.out_dirs)
            if spec.threads and spec.threads > self.max_threads:
                self.max_threads = spec.threads
        first = len(self.costs)
        self._out[P.COMMANDS_CMDS].write("".join(_shell_line(s.command) + "\n" for s in specs))
        self._out[P.POST_CMDS].write("".join(_shell_line(s.post) + "\n" for s in specs))
        self._out[P.PRODUCTS_TSV].write(_tsv([(first + i, r, loc) for i, s in enumerate(specs) for r, loc in s.products]))
        self._out[P.COMPONENTS_TSV].write(_tsv([(first + i, s.stage_id) for i, s in enumerate(specs)]))
        # line i: component i's inputs, as line numbers of requirements.tsv (exec sends the
        # site the same list, with sizes and digests, as input-files.tsv; the runner checks them)
        self._out[P.INPUTS_TSV].write("".join(f"{first + i}\t{r}\n" for i, r in enumerate(refs)))
        self.costs.extend(s.cost for s in specs)

    def close(self) -> None:
        """Close the per-component files (finish() does; after a failure, the caller)."""
        for f in self._out.values():
            f.close()

    def scale_costs(self, factor: float) -> None:
        if factor != 1.0:
            self.costs = array("d", (c * factor for c in self.costs))

    def finish(self, request: ResourceRequest) -> int:
        """The files that need every component; closes everything. Returns how many configs."""
        plan = self.plan
        if not self.costs:
            raise BundleError("nothing to prepare: no component has its inputs", remote_id=plan.remote_id)
        self.close()
        name = job_name(plan.stage, plan.remote_id, plan.attempt, plan.installation)
        env = environment()
        line_t = env.get_template("srun/line.j2")
        common = {"python": plan.python, "tools_dir": plan.tools_dir, "run_dir": plan.run_dir}
        check = {"boot": plan.boot, "digests": plan.digests, "shipped_dir": plan.shipped_dir, "shipped_digests": plan.shipped_digests}
        ranks = deal_by_cost(self.costs, request.nranks)

        def line(task: int, offset: int, ids: str) -> str:
            return line_t.render(task=task, offset=offset, ids=ids, **common).rstrip("\n")

        def header(index: int, offset: int) -> str:
            return render("srun/multiprog.conf.j2", part_name=f"part-{index:03d}.conf", remote_id=plan.remote_id, job_name=name, offset=offset)

        parts: list[ConfigPart] = pack_configs(ranks, line, header, ranks_per_node=max(1, plan.cores_per_node // request.threads))
        files: dict[str, str] = {f"multiprog/{part.name}": part.text for part in parts}
        files[P.REQUIREMENTS_TSV] = _tsv(list(self._reqs.values()))  # first-seen order: inputs.tsv's numbers
        files[P.PRE_CMDS] = "".join(_shell_line(["mkdir", "-p", d]) + "\n" for d in sorted(self._out_dirs))
        meta = {
            "installation": plan.installation,  # the job's summary carries it back: poll knows its own job
            "remote_id": plan.remote_id,
            "stage": plan.stage,
            "attempt": plan.attempt,
            "job_name": name,
            "nranks": request.nranks,
            "threads": request.threads,
            "nodes": request.nodes,
            "walltime": request.walltime,
            "n_components": len(self.costs),
            "n_configs": len(parts),
            "ranks_used": sum(p.ntasks for p in parts),
            "walltime_seconds": request.seconds,
            "attempts": plan.attempts,
            "command_timeout": plan.command_timeout,
            "fault_map": {str(code): fault for code, fault in plan.fault_map},
            "retry_faults": list(plan.retry_faults),
            "shipped_dir": plan.shipped_dir,
        }
        files[P.BUNDLE_JSON] = json.dumps(meta, indent=1, sort_keys=True) + "\n"
        files["job.sh"] = render(
            plan.job_template,
            job_name=name,
            remote_id=plan.remote_id,
            stage=plan.stage,
            attempt=plan.attempt,
            n_components=len(self.costs),
            request=request,
            cores_per_node=plan.cores_per_node,
            parts=parts,
            threads=request.threads,
            walltime_seconds=request.seconds,
            account=plan.account,
            partition=plan.partition,
            **common,
            **check,
        )
        for rel, text in files.items():
            with self._open(rel) as f:
                f.write(text)
        return len(parts)


def assemble(specs: Sequence[ComponentSpec], request: ResourceRequest, plan: BundlePlan) -> dict[str, str]:
    """All files of the bundle, by relative path. Pure: same specs, same bytes."""
    buffers: dict[str, _Buffer] = {}

    def open_text(rel: str) -> TextIO:
        buffers[rel] = _Buffer()
        return buffers[rel]

    writer = BundleWriter(plan, open_text)
    writer.add(specs)
    writer.finish(request)
    return {rel: buf.getvalue() for rel, buf in buffers.items()}


class BundleDir:
    """A bundle written into a temporary sibling of ``path_base``, then swapped in: a crash
    leaves the old bundle or the new one, never a mix."""

    def __init__(self, path_base: Path) -> None:
        self.path_base = path_base
        path_base.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{path_base.name}.", dir=path_base.parent))

    def open(self, rel: str) -> TextIO:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return open(p, "w")

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def commit(self) -> None:
        if (self.tmp / "job.sh").exists():
            (self.tmp / "job.sh").chmod(0o755)
        old = None
        if self.path_base.exists():
            old = self.path_base.with_name(f".{self.path_base.name}.old.{os.getpid()}")
            os.replace(self.path_base, old)
        os.replace(self.tmp, self.path_base)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

