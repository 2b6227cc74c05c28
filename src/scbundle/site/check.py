"""`scbundle site check`: the site directories that must not be writable by others, as they are.

One link call runs remote/sc_sitecheck.py inline (it looks, never changes: lstat, listdir and
the tools' digests), so it works where the tools are absent or planted. What is wrong is
decided here, from what came back (pure, ``assess``):

- every directory above permanent_root (of its real path): root's or this account's, and not
  writable by group or others unless its sticky bit is set (another account could rename
  what is below it);
- permanent_root: root's or this account's, not writable by group or others;
- permanent_root/tools, tools/<hash>, runs, each run directory in runs/, jobs, stages (the
  stages' shipped files): this
  account's, not writable by group or others, not a symbolic link, a directory; the tools
  match this installation's digests. Missing ones are created at first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from scbundle.core.config import Site
from scbundle.core.errors import CommandError
from scbundle.core.resources import inline_code, tool_digests
from scbundle.site.layout import registry_dir, tools_dir
from scbundle.site.link import Transport

MAX_RUNS = 10_000  # run directories looked at in one check


@dataclass(frozen=True)
class DirState:
    role: str
    path: str
    exists: bool
    owner: str | None = None  # "name (uid)"
    mode: str | None = None  # "0755"
    group_writable: bool = False
    other_writable: bool = False
    symlink: bool = False
    target: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SiteCheck:
    site: str
    account: str  # the site account the link logs in as, "name (uid)"
    dirs: list[DirState]
    runs_total: int  # run directories in runs/ (only the first MAX_RUNS are looked at)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.dirs)

    @property
    def problems(self) -> list[DirState]:
        return [d for d in self.dirs if not d.ok]


def _owner(e: dict) -> str:
    return f"{e.get('user') or '?'} ({e.get('uid')})"


def _writable(e: dict) -> list[str]:
    if e.get("symlink"):
        return []  # a link's own mode means nothing
    who = [w for w, bit in (("group", 0o020), ("others", 0o002)) if e.get("mode", 0) & bit]
    return [f"writable by {' and '.join(who)}"] if who else []


def judge(e: dict, me: int) -> tuple[str, ...]:
    """What is wrong with one entry (empty: nothing). Pure."""
    if e.get("error"):
        return (f"cannot be examined: {e['error']}",)
    if not e.get("exists"):
        return ()  # created (by this account) at first use
    role = e["role"]
    if role == "above permanent_root":
        out = [] if e["uid"] in (0, me) else [f"owned by {_owner(e)}: that account can rename what is below"]
        if not e.get("sticky"):
            out += [f"{w} (no sticky bit): they can rename what is below" for w in _writable(e)]
        return tuple(out)
    out = []
    if e["uid"] != me and not (role == "permanent_root" and e["uid"] == 0):
        out.append(f"owned by {_owner(e)}, not by this account")
    out += _writable(e)
    if e.get("symlink") and role != "permanent_root":  # a symlinked permanent_root is judged by its real path above
        out.append(f"a symbolic link (to {e.get('target')})")
    if not e.get("dir"):
        out.append("not a directory")
    return tuple(out)


def _state(e: dict, me: int, extra: tuple[str, ...] = ()) -> DirState:
    exists = bool(e.get("exists"))
    mode = e.get("mode", 0) if not e.get("symlink") else 0
    return DirState(
        role=e["role"], path=e["path"], exists=exists,
        owner=_owner(e) if exists else None, mode=f"{mode:04o}" if exists else None,
        group_writable=exists and bool(mode & 0o020), other_writable=exists and bool(mode & 0o002),
        symlink=bool(e.get("symlink")), target=e.get("target"), problems=judge(e, me) + extra,
    )  # fmt: skip


def assess(site_name: str, raw: dict) -> SiteCheck:
    """The check's verdicts from what sc_sitecheck.py printed. Pure."""
    me = int(raw["uid"])
    tool_problems = tuple(f"{name}: {why}" for name, why in raw.get("tools", []) if why)
    dirs = [_state(e, me) for e in raw.get("above", [])]
    for e in raw["paths"]:
        dirs.append(_state(e, me, tool_problems if e["role"] == "tools/<hash>" and e.get("exists") else ()))
    dirs += [_state(e, me) for e in raw.get("runs", [])]
    return SiteCheck(site_name, f"{raw.get('user') or '?'} ({me})", dirs, int(raw.get("runs_total", 0)))


def request(site: Site) -> dict:
    root = site.permanent_root.rstrip("/")
    tools = tools_dir(site)
    paths = [("permanent_root", root), ("tools", f"{root}/tools"), ("tools/<hash>", tools),
             ("runs", f"{root}/runs"), ("jobs", registry_dir(site)), ("stages", f"{root}/stages")]  # fmt: skip
    return {"paths": paths, "above": root, "runs": f"{root}/runs", "tools": tools, "digests": tool_digests(), "max_runs": MAX_RUNS}


def site_check(t: Transport, site_name: str, site: Site) -> SiteCheck:
    """One link call: every directory that must not be writable by others, judged."""
    argv = [site.python, "-S", "-c", inline_code("sc_sitecheck.py")]
    done = t.run(argv, input=json.dumps(request(site)).encode())
    try:
        raw = json.loads(done.text)
    except ValueError:
        raise CommandError(argv, 0, f"the site check printed {done.text[-300:]!r}, not JSON", what=f"site check on {site_name}") from None
    return assess(site_name, raw)
