"""Shipping scbundle's remote tools (remote/) to a site, once per version."""

from __future__ import annotations

import shlex

from scbundle.core.config import Site
from scbundle.core.resources import remote_dir, remote_files
from scbundle.site.layout import tools_dir
from scbundle.site.link import Transport
from scbundle.site.transfer import write_text_tar


def ensure_tools(t: Transport, site: Site) -> None:
    """Ship remote/ to its content-addressed directory once; a partial copy never counts."""
    tools = tools_dir(site)
    if t.run(["test", "-f", f"{tools}/.complete"], check=False).returncode == 0:
        return
    parent = tools.rsplit("/", 1)[0]
    script = (
        f"set -e; mkdir -p {shlex.quote(parent)}; tmp=$(mktemp -d {shlex.quote(parent)}/.incoming.XXXXXX); "
        f'tar -x -f - -C "$tmp"; chmod +x "$tmp/bin/"* 2>/dev/null || true; touch "$tmp/.complete"; '
        f'mv -T "$tmp" {shlex.quote(tools)} 2>/dev/null || rm -rf "$tmp"'
    )
    root = remote_dir()
    files = {str(p.relative_to(root)): p.read_bytes() for p in remote_files()}
    t.stream_in(["sh", "-c", script], lambda out: write_text_tar(out, files))
