"""Where scbundle keeps things on a site, and how it names them there (pure).

    <permanent_root>/tools/<hash>/          a copy of remote/ (site/tools.py ships it)
    <permanent_root>/runs/<stage>.<id>.a<n>  a run directory
    <permanent_root>/jobs/                   the local scheduler's job registry
    <permanent_root>/manifest/               what the push wrote there, by content (sc_remote.py)
"""

from __future__ import annotations

from scbundle.core.config import Site
from scbundle.core.resources import tools_hash


def job_name(stage: str, remote_id: int, attempt: int) -> str:
    """Deterministic: a re-run exec finds the job it already submitted by this name."""
    return f"scb-{stage}-{remote_id}-a{attempt}"


def remote_run_dir(permanent_root: str, stage: str, remote_id: int, attempt: int) -> str:
    return f"{permanent_root.rstrip('/')}/runs/{stage}.{remote_id}.a{attempt}"


def remote_tools_dir(permanent_root: str, tools_hash: str) -> str:
    return f"{permanent_root.rstrip('/')}/tools/{tools_hash}"


def tools_dir(site: Site) -> str:
    """This installation's remote tools on ``site``."""
    return remote_tools_dir(site.permanent_root, tools_hash())


def manifest_dir(site: Site) -> str:
    """The site account's record of the inputs it holds (path, stat key, sha256): 0700, its own."""
    return f"{site.permanent_root.rstrip('/')}/manifest"


def registry_dir(site: Site) -> str:
    return f"{site.permanent_root.rstrip('/')}/jobs"


def roots_args(site: Site) -> list[str]:
    """``--root R`` for each of the site's roots: every path a remote tool touches lies under one."""
    args: list[str] = []
    for root in site.roots:
        args += ["--root", root]
    return args


def tool_argv(python: str, tools_dir: str, tool: str, *args: str) -> list[str]:
    """How scbundle runs one of its remote tools: stdlib only, so no site-packages (-S)."""
    return [python, "-S", f"{tools_dir}/{tool}", *args]
