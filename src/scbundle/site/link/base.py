"""The transport interface: run an argv on the site, optionally streaming stdin or stdout.

Everything scbundle does on a site (validation, transfers, submission, status) is one of
these calls, so a run costs a small, fixed number of invocations whatever its size.
Process transports (local, OpenSSH) only say how to turn an argv into a local process
(``_command``); the process handling is shared. The paramiko transport speaks the same
three verbs over its own channels.
"""

from __future__ import annotations

import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import IO

from scbundle.core.errors import CommandError, SiteUnsafeError
from scbundle.core.resources import BOOT_UNSAFE

STDERR_KEEP = 64 * 1024


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def _drain(stream: IO[bytes], sink: bytearray, keep: int | None) -> None:
    for chunk in iter(lambda: stream.read(65536), b""):
        sink.extend(chunk)
        if keep is not None and len(sink) > keep:
            del sink[: len(sink) - keep]


def command_failure(site_name: str, argv: Sequence[str], returncode: int, stderr: bytes) -> Exception:
    """The error for a failed invocation: the tool bootstrap's refusal of a directory or tool
    another account could change is a SiteUnsafeError (fault 3, not a retryable 2)."""
    text = stderr.decode("utf-8", "replace")
    if returncode == BOOT_UNSAFE and "scbundle tools: " in text:
        why = text[text.rindex("scbundle tools: ") + len("scbundle tools: ") :].strip().splitlines()[0][:1000]
        return SiteUnsafeError(f"site {site_name}: {why} (`scbundle site check {site_name}` lists the site's directories)")
    return CommandError(argv, returncode, stderr, what=f"on site {site_name}")


class Transport(ABC):
    """What exec and poll need from a site: run, stream in, stream out. Nothing more."""

    site_name: str

    def __init__(self, site_name: str) -> None:
        self.site_name = site_name
        self.invocations = 0  # counted for bench/: a run must cost a small constant

    def link_up(self) -> bool:
        """Is the link usable without a person? (Always, for a local site.)"""
        return True

    @abstractmethod
    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True, timeout: float | None = None) -> Completed: ...

    @abstractmethod
    def stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], *, check: bool = True) -> Completed: ...

    @abstractmethod
    def stream_out(self, argv: Sequence[str], consumer: Callable[[IO[bytes]], None], *, input: bytes = b"", check: bool = True) -> Completed: ...

    def close(self) -> None:
        """Release what the transport holds (connections); a no-op for process transports."""


class ProcessTransport(Transport):
    """Each invocation is a local process: subclasses say which (``_command``)."""

    def _command(self, argv: Sequence[str]) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _slot(self) -> AbstractContextManager[object]:
        """Held around each invocation (the ssh link caps concurrent sessions over its master)."""
        return nullcontext()

    def _classify(self, argv: Sequence[str], returncode: int, stderr: bytes) -> Exception:
        """The error for a failed invocation (ssh transports turn 255 into LinkDownError)."""
        return command_failure(self.site_name, argv, returncode, stderr)

    def _check(self, done: Completed, check: bool) -> Completed:
        if check and done.returncode != 0:
            raise self._classify(done.argv, done.returncode, done.stderr)
        return done

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        self.invocations += 1
        try:
            with self._slot():
                p = subprocess.run(
                    self._command(argv), input=input if input is not None else b"", capture_output=True, timeout=timeout
                )
        except subprocess.TimeoutExpired as err:
            raise CommandError(argv, -1, err.stderr or b"", what=f"timed out after {timeout} s on site {self.site_name}") from None
        except OSError as err:
            raise CommandError(argv, -1, str(err), what=f"cannot start on site {self.site_name}") from None
        return self._check(Completed(tuple(argv), p.returncode, p.stdout, p.stderr), check)

    def stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], *, check: bool = True) -> Completed:
        """Run ``argv`` with ``producer`` writing its stdin (a tar stream, say)."""
        self.invocations += 1
        with self._slot():
            return self._stream_in(argv, producer, check)

    def _stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], check: bool) -> Completed:
        proc = subprocess.Popen(self._command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = bytearray(), bytearray()
        threads = [
            threading.Thread(target=_drain, args=(proc.stdout, out, None), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, err, STDERR_KEEP), daemon=True),
        ]
        for t in threads:
            t.start()
        assert proc.stdin is not None
        try:
            producer(proc.stdin)
        except BrokenPipeError:
            pass  # the far side ended early; its exit code and stderr say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        rc = proc.wait()
        for t in threads:
            t.join()
        return self._check(Completed(tuple(argv), rc, bytes(out), bytes(err)), check)

    def stream_out(
        self,
        argv: Sequence[str],
        consumer: Callable[[IO[bytes]], None],
        *,
        input: bytes = b"",
        check: bool = True,
    ) -> Completed:
        """Run ``argv`` (fed ``input``) and hand its stdout to ``consumer`` as a stream."""
        self.invocations += 1
        with self._slot():
            return self._stream_out(argv, consumer, input, check)

    def _stream_out(self, argv: Sequence[str], consumer: Callable[[IO[bytes]], None], input: bytes, check: bool) -> Completed:
        proc = subprocess.Popen(self._command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = bytearray()
        assert proc.stdin is not None and proc.stdout is not None

        def feed() -> None:
            try:
                proc.stdin.write(input)  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass

        threads = [
            threading.Thread(target=feed, daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, err, STDERR_KEEP), daemon=True),
        ]
        for t in threads:
            t.start()
        failure: BaseException | None = None
        try:
            consumer(proc.stdout)
        except BaseException as exc:  # finish the process, then decide which error matters
            failure = exc
            proc.kill()
        rest = proc.stdout.read()  # anything the consumer left (a tar's trailing blocks)
        del rest
        rc = proc.wait()
        for t in threads:
            t.join()
        done = Completed(tuple(argv), rc, b"", bytes(err))
        if rc != 0 and check and failure is not None and not isinstance(failure, KeyboardInterrupt):
            raise self._classify(done.argv, rc, done.stderr) from failure
        if failure is not None:
            raise failure
        return self._check(done, check)
