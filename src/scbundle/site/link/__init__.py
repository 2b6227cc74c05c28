"""The link to a site: a small transport (run, with streams in or out) and its kinds."""

from __future__ import annotations

from collections.abc import Collection

from scbundle.core.config import Site
from scbundle.core.errors import ConfigError, LinkDownError
from scbundle.site.link.base import Completed, ProcessTransport, Transport
from scbundle.site.link.local import LocalTransport


def transport_for(site_name: str, site: Site, off: Collection[str] = ()) -> Transport:
    """``off``: front ends out of service (`scbundle link host off`), never used."""
    if site.link == "local":
        return LocalTransport(site_name)
    if site.link == "ssh":
        from scbundle.site.link.openssh import OpenSshTransport

        return OpenSshTransport(site_name, site, off)
    if site.link == "paramiko":
        from scbundle.site.link.paramiko import ParamikoTransport

        return ParamikoTransport(site_name, site, off)
    raise ConfigError(f"site {site_name!r}: link kind {site.link!r} is not supported")


__all__ = ["Completed", "LocalTransport", "ProcessTransport", "Transport", "live_transport", "transport_for"]


def live_transport(site_name: str, site: Site, off: Collection[str] = ()) -> Transport:
    """A transport whose link is up over a front end not in ``off``; LinkDownError, naming
    `link start`, otherwise."""
    t = transport_for(site_name, site, off)
    if not t.link_up():
        t.close()
        raise LinkDownError(f"link to site {site_name} is down: run `scbundle link start {site_name}`")
    return t
