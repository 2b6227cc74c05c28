"""The link to a site: a small transport (run, with streams in or out) and its kinds."""

from __future__ import annotations

from scbundle.core.config import Site
from scbundle.core.errors import ConfigError
from scbundle.site.link.base import Completed, ProcessTransport, Transport
from scbundle.site.link.local import LocalTransport


def transport_for(site_name: str, site: Site) -> Transport:
    if site.link == "local":
        return LocalTransport(site_name)
    if site.link == "ssh":
        from scbundle.site.link.openssh import OpenSshTransport

        return OpenSshTransport(site_name, site)
    if site.link == "paramiko":
        from scbundle.site.link.paramiko import ParamikoTransport

        return ParamikoTransport(site_name, site)
    raise ConfigError(f"site {site_name!r}: link kind {site.link!r} is not supported")


__all__ = ["Completed", "LocalTransport", "ProcessTransport", "Transport", "transport_for"]
