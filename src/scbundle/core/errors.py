"""Errors that carry what an operator needs to act without rerunning anything."""

from __future__ import annotations

import errno
import shlex
from collections.abc import Sequence

from scbundle.core.states import Fault
from scbundle.core.text import printable


class ScbundleError(Exception):
    """An error the command line reports as one line, with a non-zero exit code."""

    fault: Fault = Fault.UNKNOWN

    def __init__(self, message: str, *, remote_id: int | None = None) -> None:
        super().__init__(message)
        self.remote_id = remote_id

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_id is not None and "remote_id" not in text:
            text = f"remote_id {self.remote_id}: {text}"
        return text


class ConfigError(ScbundleError):
    fault = Fault.CONFIG


class DatabaseError(ScbundleError):
    fault = Fault.SYSTEM


class StateError(ScbundleError):
    """A run is not in the state a step needs (or does not exist)."""

    fault = Fault.CONFIG


class BundleError(ScbundleError):
    fault = Fault.DATA


class DbinfoError(ScbundleError):
    """A returned dbinfo record is refused; names the file and the line."""

    fault = Fault.DATA


class UnsafeArchiveError(ScbundleError):
    """A returned archive or file list points outside the run's destination."""

    fault = Fault.DATA


class OversizeError(ScbundleError):
    """What a site sent is larger than the local side accepts: nothing more was read."""

    fault = Fault.DATA


class LocalIOError(ScbundleError):
    """The local side could not write a file (a full disk, a read-only or vanished
    directory): names the file. It outranks whatever the site said after it."""

    fault = Fault.SYSTEM

    @classmethod
    def writing(cls, path: object, err: OSError) -> LocalIOError:
        if err.errno == errno.ENOSPC:
            return cls(f"no space left on device writing {path}")
        if err.errno == errno.EDQUOT:
            return cls(f"disk quota exceeded writing {path}")
        return cls(f"cannot write {path}: {err.strerror or err}")


class LinkDownError(ScbundleError):
    """The link to the site is down (or needs a human to authenticate)."""

    fault = Fault.SYSTEM


class SiteUnsafeError(ScbundleError):
    """A site directory or tool that another account could change (not this account's, writable
    by group or others, a symbolic link), or a tool that differs from this installation's: nothing
    ran there."""

    fault = Fault.CONFIG


class UnsafeNameError(ScbundleError):
    """A label, stage or job name that cannot become a path or a job name: nothing is built from it."""

    fault = Fault.CONFIG


class HostKeyError(ScbundleError):
    """The site's host key does not match the known-hosts file: nothing was sent."""

    fault = Fault.CONFIG


def shown_command(argv: Sequence[str]) -> str:
    """A command for a message: quoted, with the inline tool bootstrap and the digest list
    (thousands of characters on every tool invocation) named instead of spelled out."""
    try:
        from scbundle.core.resources import boot_code, tool_digests

        marks = {boot_code(): "<scbundle bootstrap>", tool_digests(): "<tool digests>"}
    except OSError:
        marks = {}
    return " ".join(marks.get(w) or (shlex.quote(w) if len(w) <= 400 else f"<{len(w)} characters>") for w in argv)


class CommandError(ScbundleError):
    """A command (local or over the link) failed: command, exit code, tail of stderr."""

    fault = Fault.SYSTEM

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: bytes | str = b"",
        *,
        remote_id: int | None = None,
        what: str = "command failed",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        if isinstance(stderr, bytes):
            stderr = stderr.decode("utf-8", "replace")
        # the site's text: no escape sequence of it reaches a terminal through this message
        self.stderr_tail = printable("\n".join(stderr.strip().splitlines()[-5:]), multiline=True)
        message = f"{what}: exit {returncode}: {shown_command(self.argv)}"
        if self.stderr_tail:
            message += f" | stderr: {self.stderr_tail}"
        super().__init__(message, remote_id=remote_id)


class UnsafePathError(ConfigError):
    """A directory or file scbundle keeps private (the link's control directory, the claim
    locks, the database) is not: a symbolic link, another user's, or open to others."""
