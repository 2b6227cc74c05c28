"""The `local` site's link: the "remote" side is this machine; commands run directly."""

from __future__ import annotations

from collections.abc import Sequence

from scbundle.site.link.base import ProcessTransport


class LocalTransport(ProcessTransport):
    def _command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)
