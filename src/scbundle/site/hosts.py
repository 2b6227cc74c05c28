"""Which of a site's front ends a transfer or a submission may use: in service (`scbundle
link host on|off`) and with its master up. The one place that decides it: exec's submission,
the single-host path (``OpenSshLink.up_alias``) and the push fan-out all ask here."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from sqlalchemy.orm import Session

from scbundle.db.hosts import off_hosts


def in_service(hosts: Sequence[str], off: Collection[str]) -> list[int]:
    """Pure: the indices of ``hosts`` not in ``off``, in configured order."""
    return [i for i, h in enumerate(hosts) if h not in off]


def usable_indices(hosts: Sequence[str], off: Collection[str], up: Callable[[int], bool]) -> list[int]:
    """The indices of ``hosts`` in service whose master ``up(i)`` says is up (asked only for those)."""
    return [i for i in in_service(hosts, off) if up(i)]


def usable_hosts(session: Session, site_name: str, link) -> list[int]:  # link: OpenSshLink (site.link.openssh)
    """The indices of ``site_name``'s front ends in service with their master up, in order."""
    return usable_indices(link.ssh.hosts, off_hosts(session, site_name), lambda i: link.check_one(i).up)
