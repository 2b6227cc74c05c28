"""A site in a local directory for in-process tests of the steps (exec, poll, advance, revert,
cancel): the real remote tools (remote/*.py) run as processes on this machine, the local
scheduler runs the jobs, and the transport lets a test cut the link, cut a stream or fail one
run's commands on cue. What cannot happen on a local directory by itself (a dropped link, a
stream cut mid-way) is the only thing faked; everything the site does is the real tools'.

The steps open their transport through ``scbundle.site.link.transport_for`` (the step loop's
``live_transport``, cancel's), so ``FakeSite.install`` puts this one in its place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

import scbundle.site.link as link
from scbundle.core.app import App
from scbundle.core.config import Site, config_from_dict, embedded_default
from scbundle.core.errors import LinkDownError
from scbundle.db.migrate import upgrade
from scbundle.db.session import Database
from scbundle.site.link.base import Completed
from scbundle.site.link.local import LocalTransport


@dataclass
class Faults:
    """What goes wrong, and where: a part of a path in the argv (a site's root, a run
    directory), or for ``cut_on`` one whole word of it (a subcommand: ``pack``), picks the
    invocations it hits."""

    down: bool = False  # the link is down before anything is asked (live_transport refuses)
    drop_on: str | None = None  # the invocation whose argv holds this finds the link dropped
    cut_on: str | None = None  # the stdout of the invocation with this word is cut after cut_bytes
    cut_bytes: int = 1024
    fail_on: str | None = None  # this invocation exits 1, as a tool that failed on the site


@dataclass
class FakeSite:
    home: Path
    faults: Faults = field(default_factory=Faults)
    opened: list[str] = field(default_factory=list)  # the site of each transport opened
    argvs: list[tuple[str, ...]] = field(default_factory=list)  # every invocation, in order

    def transport_for(self, site_name: str, site: Site, off: Collection[str] = ()) -> DirTransport:
        self.opened.append(site_name)
        return DirTransport(site_name, self)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
        monkeypatch.setattr(link, "transport_for", self.transport_for)
        return self


class DirTransport(LocalTransport):
    """The local site's transport with the faults of its FakeSite."""

    def __init__(self, site_name: str, fake: FakeSite) -> None:
        super().__init__(site_name)
        self.fake = fake

    def link_up(self) -> bool:
        return not self.fake.faults.down

    def _hits(self, argv: Sequence[str], word: str | None) -> bool:
        return word is not None and any(word in a for a in argv)

    def _enter(self, argv: Sequence[str]) -> None:
        self.fake.argvs.append(tuple(argv))
        f = self.fake.faults
        if f.down or self._hits(argv, f.drop_on):
            raise LinkDownError(f"link to site {self.site_name} is down: run `scbundle link start {self.site_name}`")

    def _command(self, argv: Sequence[str]) -> list[str]:
        f = self.fake.faults
        if self._hits(argv, f.fail_on):
            return ["sh", "-c", "echo 'the site says no' >&2; exit 1"]
        if f.cut_on is not None and f.cut_on in argv:  # the real tool, its output cut short, and the command failed (as a dropped channel)
            return ["bash", "-c", f'"$@" | head -c {int(f.cut_bytes)}; echo "channel closed" >&2; exit 141', "bash", *argv]
        return list(argv)

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True, timeout: float | None = None) -> Completed:
        self._enter(argv)
        return super().run(argv, input=input, check=check, timeout=timeout)

    def stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], *, check: bool = True) -> Completed:
        self._enter(argv)
        return super().stream_in(argv, producer, check=check)

    def stream_out(self, argv: Sequence[str], consumer: Callable[[IO[bytes]], None], *, input: bytes = b"", check: bool = True) -> Completed:
        self._enter(argv)
        return super().stream_out(argv, consumer, input=input, check=check)


def make_app(home: Path, **local: object) -> App:
    """An App on the embedded default (the `local` site under ``home``, SQLite, ``local`` its
    settings changed), upgraded, with a second site `other` of the same kind under
    home/site-other."""
    raw = embedded_default(home)
    other = dict(raw["sites"]["local"])
    raw["sites"]["local"].update(local)
    other_root = home / "site-other"
    other.update(remote_root=str(other_root / "scratch"), permanent_root=str(other_root / "permanent"),
                 paths=[{"local": str(home / "data"), "remote": str(other_root / "scratch" / "data")}])  # fmt: skip
    raw["sites"]["other"] = other
    cfg = config_from_dict(raw, "test")
    db = Database(cfg.database)
    upgrade(db)
    return App(cfg, db)


def task_file(home: Path, scripts: Sequence[str], name: str = "tasks.jsonl") -> Path:
    """A `commands` task file: task i runs ``scripts[i]`` (sh, $1 its input, $2 its output,
    which is the task's permanent product) on an input file of its own."""
    data = home / "data"
    (data / "in").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, script in enumerate(scripts):
        own = data / "in" / f"{name}.{i}.txt"
        own.write_text(f"task {i}\n")
        lines.append(json.dumps({
            "command": ["/bin/sh", "-c", script, "sh", "{input0}", "{output0}"],
            "inputs": [str(own)], "outputs": [str(data / "out" / f"{name}.{i}.out")], "key": f"{name}.{i}", "cost": 0.05,
        }))  # fmt: skip
    path = home / name
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_job(run_dir: str | Path, timeout: float = 60) -> int:
    """The job's exit marker once the job script has written it (the local scheduler's job runs
    detached on this machine)."""
    marker = Path(run_dir) / "job.exit"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().strip())
        time.sleep(0.05)
    raise AssertionError(f"no exit marker in {run_dir} after {timeout} s")
