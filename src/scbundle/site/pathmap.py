"""Path translation between the local disks and the site's disks (prefix rules)."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from scbundle.core.config import PathRule
from scbundle.core.errors import ConfigError


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


@dataclass(frozen=True)
class PathMap:
    """Longest-prefix translation; refuses paths no rule covers."""

    rules: tuple[PathRule, ...]

    @classmethod
    def of(cls, rules: Sequence[PathRule]) -> PathMap:
        return cls(tuple(sorted(rules, key=lambda r: len(r.local), reverse=True)))

    def to_remote(self, local: str) -> str:
        local = posixpath.normpath(local)
        for rule in self.rules:
            if _under(local, rule.local):
                return rule.remote + local[len(rule.local.rstrip("/")) :]
        raise ConfigError(f"no path rule maps local path {local!r} to the site (add a [[sites.X.paths]] rule)")

    def to_local(self, remote: str) -> str:
        remote = posixpath.normpath(remote)
        for rule in sorted(self.rules, key=lambda r: len(r.remote), reverse=True):
            if _under(remote, rule.remote):
                return rule.local + remote[len(rule.remote.rstrip("/")) :]
        raise ConfigError(f"no path rule maps remote path {remote!r} back to a local path")

    def local_roots(self) -> list[str]:
        return [r.local for r in self.rules]

    def covers_local(self, local: str) -> bool:
        local = posixpath.normpath(local)
        return posixpath.isabs(local) and any(_under(local, r.local) for r in self.rules)
