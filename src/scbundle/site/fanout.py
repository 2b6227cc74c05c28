"""Fan-out of a push over every usable front end: bundles, lanes, and the streams that carry them.

The missing inputs of a run are cut into bundles (small files packed together up to
``bundle_bytes``, a file that size or larger alone), and the bundles dealt to lanes, a lane
being one stream on one host (``streams`` of them per host), largest first onto the lane
with the least bytes so far: the lanes carry similar byte counts and every host is used
before any gets a second stream. Each lane is one tar stream, one ssh invocation, whatever
the number of bundles in it: the invocations of a push are at most hosts x streams (+ a
re-check and the re-sent lanes when a host is lost).

A lane whose host drops (LinkDownError) is not retried blindly: the site is asked again,
by content (sc_remote.py missing), what it still lacks, and only that is dealt over the
hosts still up. The unpacker renames each file into place only once its sha256 checked, so
a cut stream leaves no half-written file under a final name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scbundle.core.errors import LinkDownError
from scbundle.site.link import Transport
from scbundle.site.transfer import write_push_tar

DEFAULT_BUNDLE_BYTES = 100 << 20
MEMBER_OVERHEAD = 1024  # a pax header block + a ustar header block: what a tiny file costs the stream

Pair = tuple[str, str]  # (local path, remote path)


@dataclass(frozen=True)
class Bundle:
    files: tuple[Pair, ...]
    nbytes: int  # data bytes + MEMBER_OVERHEAD a file


@dataclass(frozen=True)
class Lane:
    """One stream on one host: the bundles it carries, in order."""

    host: int  # index into the hosts the plan was made for
    stream: int
    bundles: tuple[Bundle, ...]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.bundles)

    @property
    def files(self) -> list[Pair]:
        return [f for b in self.bundles for f in b.files]


def make_bundles(files: Sequence[Pair], sizes: dict[str, int], bundle_bytes: int = DEFAULT_BUNDLE_BYTES) -> list[Bundle]:
    """Small files packed together in remote-path order (so a bundle fills few directories),
    up to ``bundle_bytes`` each; a file of ``bundle_bytes`` or more is a bundle alone."""
    if bundle_bytes <= 0:
        raise ValueError(f"bundle size must be positive, not {bundle_bytes}")
    out: list[Bundle] = []
    cur: list[Pair] = []
    cur_bytes = 0
    for pair in sorted(files, key=lambda p: p[1]):
        cost = sizes[pair[1]] + MEMBER_OVERHEAD
        if cost >= bundle_bytes:
            out.append(Bundle((pair,), cost))
            continue
        if cur and cur_bytes + cost > bundle_bytes:
            out.append(Bundle(tuple(cur), cur_bytes))
            cur, cur_bytes = [], 0
        cur.append(pair)
        cur_bytes += cost
    if cur:
        out.append(Bundle(tuple(cur), cur_bytes))
    return out


def assign(bundles: Sequence[Bundle], n_hosts: int, streams: int) -> list[Lane]:
    """Deal bundles to ``n_hosts`` x ``streams`` lanes, largest first onto the lightest lane
    (ties: the lower stream number, then the lower host: every host before a second stream).
    Lanes left empty are dropped."""
    if n_hosts <= 0 or streams <= 0:
        raise ValueError(f"a push needs at least one host and one stream (hosts {n_hosts}, streams {streams})")
    keys = [(s, h) for s in range(streams) for h in range(n_hosts)]
    loads = {k: 0 for k in keys}
    dealt: dict[tuple[int, int], list[Bundle]] = {k: [] for k in keys}
    for b in sorted(bundles, key=lambda b: (-b.nbytes, b.files[0][1])):
        k = min(keys, key=lambda k: (loads[k], k))
        dealt[k].append(b)
        loads[k] += b.nbytes
    return [Lane(h, s, tuple(dealt[(s, h)])) for s, h in keys if dealt[(s, h)]]


def plan(files: Sequence[Pair], sizes: dict[str, int], n_hosts: int, streams: int, bundle_bytes: int = DEFAULT_BUNDLE_BYTES) -> list[Lane]:
    return assign(make_bundles(files, sizes, bundle_bytes), n_hosts, streams)


@dataclass
class PushReport:
    lanes: int = 0  # streams opened (one ssh invocation each)
    rechecks: int = 0  # times the site was asked again what it lacks, after a lost host
    lost_hosts: tuple[int, ...] = ()  # indices into the transports given
    bytes_by_host: dict[int, int] | None = None  # planned bytes of the lanes that finished, by host


def push_fanout(
    transports: Sequence[Transport],
    argv: list[str],
    files: Sequence[Pair],
    sizes: dict[str, int],
    *,
    streams: int,
    bundle_bytes: int = DEFAULT_BUNDLE_BYTES,
    recheck: Callable[[Transport], list[Pair]] | None = None,
    on_file: Callable[[int], None] | None = None,
) -> PushReport:
    """Push ``files`` over every transport (one per usable host), ``streams`` streams each.

    A lane that fails with LinkDownError takes its host out of this push; when every lane
    is done, ``recheck`` (on a host still up) says what the site still lacks, and only that
    is dealt again over the hosts left. Any other failure (a refusal by the unpacker, a full
    disk) is raised as it is: sending it elsewhere would fail the same way. LinkDownError
    when no host is left."""
    up = list(range(len(transports)))
    report = PushReport(bytes_by_host={})
    todo = list(files)
    while todo:
        lanes = plan(todo, sizes, len(up), streams, bundle_bytes)
        report.lanes += len(lanes)
        workers = max(1, len(lanes))
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(transports[up[lane.host]].stream_in, argv,
                            lambda out, fs=lane.files: write_push_tar(out, fs, on_file=on_file))
                for lane in lanes
            ]  # fmt: skip
            errors = [f.exception() for f in futures]
        lost: set[int] = set()
        for lane, err in zip(lanes, errors):
            host = up[lane.host]
            if err is None:
                report.bytes_by_host[host] = report.bytes_by_host.get(host, 0) + lane.nbytes  # type: ignore[index]
            elif isinstance(err, LinkDownError):
                lost.add(host)
        for err in errors:
            if err is not None and not isinstance(err, LinkDownError):
                raise err
        if not lost:
            return report
        report.lost_hosts = (*report.lost_hosts, *sorted(lost))
        up = [h for h in up if h not in lost]
        if not up or recheck is None:
            raise next(e for e in errors if isinstance(e, LinkDownError))  # type: ignore[misc]
        todo = _recheck(recheck, transports, up, report)
    return report


def _recheck(recheck: Callable[[Transport], list[Pair]], transports: Sequence[Transport], up: list[int], report: PushReport) -> list[Pair]:
    """What the site still lacks, asked over the first host that answers (a host that drops
    meanwhile leaves ``up`` too)."""
    while True:
        report.rechecks += 1
        try:
            return recheck(transports[up[0]])
        except LinkDownError:
            report.lost_hosts = (*report.lost_hosts, up.pop(0))
            if not up:
                raise
