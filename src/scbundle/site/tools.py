"""Shipping scbundle's remote tools (remote/) to a site, and verifying them there.

Every tool invocation goes through the inline bootstrap (remote/sc_boot.py, see
site/layout.py tool_argv), which checks the tool's owner, mode and sha256 against this
installation's digests in the same call that runs it. ensure_tools does the same for every
tool at once before exec uses them, and ships (or replaces) the directory when it is absent
or differs; a directory another account could change is refused, never used or replaced.
"""

from __future__ import annotations

import shlex

from scbundle.core.config import Site
from scbundle.core.resources import BOOT_ABSENT, BOOT_MISMATCH, remote_dir, remote_files
from scbundle.site.layout import tools_check_argv, tools_dir
from scbundle.site.link import Transport
from scbundle.site.link.base import command_failure
from scbundle.site.transfer import write_text_tar


def ship_script(site: Site, *, replace: bool) -> str:
    """sh script: unpack the tar on stdin into a fresh directory of this account's (umask 022),
    swap it in (``replace``: the differing copy, this account's, goes), then verify it."""
    tools = tools_dir(site)
    parent = tools.rsplit("/", 1)[0]
    q, qp = shlex.quote(tools), shlex.quote(parent)
    swap = f'if mv -T {q} "$tmp.old" 2>/dev/null; then rm -rf "$tmp.old"; fi; ' if replace else ""
    return (
        f"set -e; umask 022; mkdir -p {qp}; tmp=$(mktemp -d {qp}/.incoming.XXXXXX); "
        f'tar -x -f - -C "$tmp"; chmod 755 "$tmp"; chmod +x "$tmp/bin/"* 2>/dev/null || true; {swap}'
        f'mv -T "$tmp" {q} 2>/dev/null || rm -rf "$tmp"; exec {shlex.join(tools_check_argv(site.python, tools))}'
    )


def ensure_tools(t: Transport, site: Site) -> str | None:
    """Verify this installation's tools on the site; ship them when absent, replace them when
    they differ. Returns what was done (None when they were in place already). A tools directory
    (or tool) that is not this account's alone raises SiteUnsafeError, naming the path, its owner
    and mode: nothing is run from it, and it is not replaced."""
    tools = tools_dir(site)
    done = t.run(tools_check_argv(site.python, tools), check=False)
    if done.returncode == 0:
        return None
    if done.returncode not in (BOOT_ABSENT, BOOT_MISMATCH):
        raise command_failure(t.site_name, done.argv, done.returncode, done.stderr)
    why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    root = remote_dir()
    files = {str(p.relative_to(root)): p.read_bytes() for p in remote_files()}
    t.stream_in(["sh", "-c", ship_script(site, replace=done.returncode == BOOT_MISMATCH)], lambda out: write_text_tar(out, files))
    if done.returncode == BOOT_ABSENT:
        return f"tools shipped to {tools}"
    return f"tools at {tools} shipped again: {why[0].removeprefix('scbundle tools: ')}"
