"""The transport interface: run an argv on the site, optionally streaming stdin or stdout.

Everything scbundle does on a site (validation, transfers, submission, status) is one of
these calls, so a run costs a small, fixed number of invocations whatever its size.
Process transports (local, OpenSSH) only say how to turn an argv into a local process
(``_command``); the process handling is shared. The paramiko transport speaks the same
three verbs over its own channels.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import IO

from scbundle.core.errors import CommandError, LocalIOError, OversizeError, SiteUnsafeError
from scbundle.core.resources import BOOT_UNSAFE

STDERR_KEEP = 64 * 1024
# What the local side keeps of a command's stdout (run, stream_in), beyond the size of what it
# sent (a tool may echo its input back, as `sc_remote.py missing` does): past it the command
# is stopped and refused (OversizeError), so a site cannot fill the local memory.
STDOUT_MAX = 64 << 20
# What stream_out reads after its consumer is done (a tar's end padding, say) before refusing.
LEFTOVER_MAX = 64 * 1024
# How long stream_out waits for a command that has closed its output to exit by itself.
EXIT_GRACE = 10.0


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


def drain_capped(read: Callable[[int], bytes], sink: bytearray, cap: int, over: Callable[[], None]) -> None:
    """Collect ``read``'s data into ``sink`` up to ``cap`` bytes; past it call ``over`` (which
    stops the producer) and read no more."""
    while chunk := read(65536):
        if len(sink) + len(chunk) > cap:
            over()
            return
        sink.extend(chunk)


def output_cap(input: bytes | None) -> int:
    """How much of a command's stdout is kept: STDOUT_MAX beyond the size of its input."""
    return STDOUT_MAX + len(input or b"")


def too_large(site_name: str, argv: Sequence[str], cap: int, what: str = "to its output") -> OversizeError:
    return OversizeError(f"site {site_name}: {shlex.join(argv)[:200]} wrote more than {cap} bytes {what}; stopped and refused")


def consumer_failure(site_name: str, failure: BaseException) -> BaseException | None:
    """The error to raise for a stream consumer's failure when it outranks the command's exit:
    a local OSError (a full disk) is the cause, whatever the site did after it."""
    if isinstance(failure, LocalIOError):
        return failure
    if isinstance(failure, OSError):
        return LocalIOError(f"reading the output of a command on site {site_name}: {failure.strerror or failure}")
    return None


class WatchedStream:
    """A command's stdout as its consumer reads it; notes whether the consumer saw its end
    (then the command has finished writing, and its exit code is its own)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if not data and n != 0:
            self.eof = True
        return data

    def readable(self) -> bool:
        return True
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

    def transfer_transports(self) -> list[Transport]:
        """One transport per host a bulk transfer may use, each pinned to its host (the
        fan-out, site/fanout.py); a link with one way in answers itself."""
        return [self]

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
        """Run ``argv`` fed ``input``; its stdout is kept up to ``output_cap(input)`` bytes
        (past that: stopped, OversizeError), its stderr's tail."""
        self.invocations += 1
        with self._slot():
            return self._run(argv, input or b"", check, timeout)

    def _run(self, argv: Sequence[str], input: bytes, check: bool, timeout: float | None) -> Completed:
        try:
            proc = subprocess.Popen(self._command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as err:
            raise CommandError(argv, -1, str(err), what=f"cannot start on site {self.site_name}") from None
        assert proc.stdin is not None and proc.stdout is not None
        cap = output_cap(input)
        out, err = bytearray(), bytearray()
        over = threading.Event()

        def too_much() -> None:
            over.set()
            proc.kill()

        def feed() -> None:
            try:
                proc.stdin.write(input)  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass

        threads = [
            threading.Thread(target=feed, daemon=True),
            threading.Thread(target=drain_capped, args=(proc.stdout.read, out, cap, too_much), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, err, STDERR_KEEP), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            for t in threads:
                t.join()
            raise CommandError(argv, -1, bytes(err), what=f"timed out after {timeout} s on site {self.site_name}") from None
        for t in threads:
            t.join()
        if over.is_set():
            raise too_large(self.site_name, argv, cap)
        return self._check(Completed(tuple(argv), rc, bytes(out), bytes(err)), check)

    def stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], *, check: bool = True) -> Completed:
        """Run ``argv`` with ``producer`` writing its stdin (a tar stream, say)."""
        self.invocations += 1
        with self._slot():
            return self._stream_in(argv, producer, check)

    def _stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], check: bool) -> Completed:
        proc = subprocess.Popen(self._command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = bytearray(), bytearray()
        over = threading.Event()

        def too_much() -> None:
            over.set()
            proc.kill()

        threads = [
            threading.Thread(target=drain_capped, args=(proc.stdout.read, out, STDOUT_MAX, too_much), daemon=True),  # type: ignore[union-attr]
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
        if over.is_set():
            raise too_large(self.site_name, argv, STDOUT_MAX)
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
        stream = WatchedStream(proc.stdout)
        failure: BaseException | None = None
        killed = False
        try:
            consumer(stream)  # type: ignore[arg-type]
        except BaseException as exc:  # finish the process, then decide which error matters
            failure = exc
        if failure is None:  # what the consumer left (a tar's end padding): a little, then the end
            rest = proc.stdout.read(LEFTOVER_MAX + 1)
            if len(rest) > LEFTOVER_MAX or proc.stdout.read(1):
                failure = too_large(self.site_name, argv, LEFTOVER_MAX, "after the end of what was read")
        if failure is not None:
            if stream.eof and not isinstance(failure, KeyboardInterrupt):
                try:  # it has closed its output: its own exit code says how it ended
                    proc.wait(EXIT_GRACE)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
                killed = True
        rc = proc.wait()
        for t in threads:
            t.join()
        proc.stdout.close()
        done = Completed(tuple(argv), rc, b"", bytes(err))
        if failure is not None:
            if isinstance(failure, KeyboardInterrupt):
                raise failure
            local = consumer_failure(self.site_name, failure)
            if local is not None:  # a full local disk outranks the remote's exit (we killed it)
                raise local from (None if local is failure else failure)
            if rc != 0 and check and not killed:  # it failed by itself: its words explain the stream
                raise self._classify(done.argv, rc, done.stderr) from failure
            raise failure
        return self._check(done, check)
