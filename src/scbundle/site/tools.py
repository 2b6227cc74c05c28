"""Shipping scbundle's remote tools (remote/) to a site, and verifying them there.

Every tool invocation goes through the inline bootstrap (remote/sc_boot.py, see
site/layout.py tool_argv), which checks the tool's owner, mode and sha256 against this
installation's digests in the same call that runs it. ensure_tools does the same for every
tool at once before exec uses them, and ships (or replaces) the directory when it is absent
or differs; a directory another account could change is refused, never used or replaced.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from scbundle.core.config import Site
from scbundle.core.resources import (
    BOOT_ABSENT,
    BOOT_MISMATCH,
    digest_list,
    remote_dir,
    remote_files,
)
from scbundle.site.layout import tools_check_argv, tools_dir
from scbundle.site.link import Transport
from scbundle.site.link.base import command_failure
from scbundle.site.transfer import write_text_tar


def ship_script(site: Site, *, replace: bool, target: str | None = None, digests: str | None = None) -> str:
    """sh script: unpack the tar on stdin into a fresh directory of this account's (umask 022),
    swap it in (``replace``: the differing copy, this account's, goes), then verify it.
    ``target``/``digests``: a stage's shipped files instead of the tools."""
    tools = target or tools_dir(site)
    parent = tools.rsplit("/", 1)[0]
    q, qp = shlex.quote(tools), shlex.quote(parent)
    swap = f'if mv -T {q} "$tmp.old" 2>/dev/null; then rm -rf "$tmp.old"; fi; ' if replace else ""
    return (
        f"set -e; umask 022; mkdir -p {qp}; tmp=$(mktemp -d {qp}/.incoming.XXXXXX); "
        f'tar -x -f - -C "$tmp"; chmod 755 "$tmp"; chmod +x "$tmp/bin/"* 2>/dev/null || true; {swap}'
        f'mv -T "$tmp" {q} 2>/dev/null || rm -rf "$tmp"; exec {shlex.join(tools_check_argv(site.python, tools, digests=digests))}'
    )


def _ensure(t: Transport, site: Site, target: str, files: Mapping[str, bytes], digests: str | None) -> tuple[bool, str] | None:
    """Verify ``files`` in ``target`` (one call); ship them when absent or differing. None when
    they were in place; else (absent, why)."""
    done = t.run(tools_check_argv(site.python, target, digests=digests), check=False)
    if done.returncode == 0:
        return None
    if done.returncode not in (BOOT_ABSENT, BOOT_MISMATCH):
        raise command_failure(t.site_name, done.argv, done.returncode, done.stderr)
    why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    script = ship_script(site, replace=done.returncode == BOOT_MISMATCH, target=target, digests=digests)
    t.stream_in(["sh", "-c", script], lambda out: write_text_tar(out, dict(files)))
    return done.returncode == BOOT_ABSENT, why[0].removeprefix("scbundle tools: ")


def ensure_tools(t: Transport, site: Site) -> str | None:
    """Verify this installation's tools on the site; ship them when absent, replace them when
    they differ. Returns what was done (None when they were in place already). A tools directory
    (or tool) that is not this account's alone raises SiteUnsafeError, naming the path, its owner
    and mode: nothing is run from it, and it is not replaced."""
    tools = tools_dir(site)
    root = remote_dir()
    done = _ensure(t, site, tools, {str(p.relative_to(root)): p.read_bytes() for p in remote_files()}, None)
    if done is None:
        return None
    return f"tools shipped to {tools}" if done[0] else f"tools at {tools} shipped again: {done[1]}"


def ensure_shipped(t: Transport, site: Site, target: str, files: Mapping[str, bytes]) -> str | None:
    """A stage's shipped files (Stage.shipped_files) in their content-addressed ``target``, as
    ensure_tools does the tools: verified by digest, owner and mode in one call; shipped when
    absent, shipped again when a file differs (changed or swapped on the site); refused
    (SiteUnsafeError) when the directory or a file is not this account's alone."""
    done = _ensure(t, site, target, files, digest_list(files))
    if done is None:
        return None
    return f"shipped files sent to {target}" if done[0] else f"shipped files at {target} sent again: {done[1]}"
