"""The link to a site: a small transport (run, with streams in or out) and its kinds."""

from __future__ import annotations

from ..config import Site
from ..errors import ConfigError
from .base import Completed, Transport
from .local import LocalTransport


def transport_for(site_name: str, site: Site) -> Transport:
    if site.link == "local":
        return LocalTransport(site_name)
    raise ConfigError(f"site {site_name!r}: link kind {site.link!r} is not supported")


__all__ = ["Completed", "LocalTransport", "Transport", "transport_for"]
