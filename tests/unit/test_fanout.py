"""The fan-out of a push (site/fanout.py): bundles and lanes as a pure plan, and the push itself
over several "hosts" (local processes running the real remote/sc_remote.py unpack and missing),
one of which drops in the middle of its streams the way ssh does (exit 255)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from scbundle.core.errors import LinkDownError
from scbundle.site.fanout import MEMBER_OVERHEAD, assign, make_bundles, plan, push_fanout
from scbundle.site.link import LocalTransport
from scbundle.site.link.openssh import classify_ssh_failure

TOOL = str(Path(__file__).resolve().parents[2] / "remote" / "sc_remote.py")
MB = 1 << 20


def _files(spec: dict[int, int]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    files, sizes = [], {}
    for size, count in spec.items():
        for i in range(count):
            remote = f"/r/d{size}/f{i:05d}"
            files.append((f"/l{remote}", remote))
            sizes[remote] = size
    return files, sizes


def test_small_files_are_packed_together_and_large_ones_go_alone():
    files, sizes = _files({20 * 1024: 10000, 300 * MB: 2})
    bundles = make_bundles(files, sizes, 100 * MB)
    assert sorted(p for b in bundles for p in b.files) == sorted(files)  # each file once
    large = [b for b in bundles if any(sizes[r] == 300 * MB for _, r in b.files)]
    assert len(large) == 2 and all(len(b.files) == 1 for b in large)
    small = [b for b in bundles if b not in large]
    assert all(b.nbytes <= 100 * MB for b in small)
    assert len(small) == -(-10000 * (20 * 1024 + MEMBER_OVERHEAD) // (100 * MB))  # as few as fit


def test_lanes_balance_bytes_and_use_every_host_before_a_second_stream():
    files, sizes = _files({10 * MB: 200})
    lanes = plan(files, sizes, n_hosts=3, streams=2, bundle_bytes=100 * MB)
    assert {(lane.host, lane.stream) for lane in lanes} == {(h, s) for h in range(3) for s in range(2)}
    loads = [lane.nbytes for lane in lanes]
    assert max(loads) - min(loads) <= 100 * MB  # within one bundle
    per_host = [sum(lane.nbytes for lane in lanes if lane.host == h) for h in range(3)]
    assert max(per_host) - min(per_host) <= 100 * MB
    assert sorted(p for lane in lanes for p in lane.files) == sorted(files)
    three = assign(make_bundles(*_files({200 * MB: 3}), 100 * MB), 3, 2)  # three big files, three hosts
    assert sorted(lane.host for lane in three) == [0, 1, 2] and {lane.stream for lane in three} == {0}


def test_a_plan_needs_a_host_and_a_stream_and_a_positive_bundle_size():
    files, sizes = _files({1: 1})
    with pytest.raises(ValueError, match="at least one host"):
        plan(files, sizes, n_hosts=0, streams=2)
    with pytest.raises(ValueError, match="bundle size"):
        make_bundles(files, sizes, 0)
    assert plan([], {}, n_hosts=3, streams=2) == []


class _Host(LocalTransport):
    """A front end: runs the command as is; ``cut_after`` bytes into each stream its
    connection drops (what reaches the unpacker stops there; ssh's exit is 255)."""

    def __init__(self, cut_after: int | None = None) -> None:
        super().__init__("mu")
        self.cut_after = cut_after

    def _command(self, argv: Sequence[str]) -> list[str]:
        if self.cut_after is None:
            return list(argv)
        return ["sh", "-c", f'head -c {self.cut_after} | "$@"; exit 255', "sh", *argv]

    def _classify(self, argv, returncode, stderr):
        return classify_ssh_failure(self.site_name, returncode, stderr.decode()) or super()._classify(argv, returncode, stderr)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_host_lost_mid_push_leaves_nothing_half_written_and_the_rest_goes_over_the_others(tmp_path):
    local, site = tmp_path / "local", tmp_path / "site"
    local.mkdir()
    site.mkdir()
    files, sizes = [], {}
    for i, size in enumerate([20 * 1024] * 40 + [300 * 1024] * 10 + [3 * MB] * 2):
        src = local / f"f{i:03d}"
        src.write_bytes(os.urandom(size))
        remote = f"{site}/data/d{i % 3}/f{i:03d}"
        files.append((str(src), remote))
        sizes[remote] = size
    manifest = str(site / ".manifest")
    unpack = ["python3", "-S", TOOL, "unpack", "--root", str(site), "--manifest", manifest]
    hosts = [_Host(), _Host(cut_after=250_000), _Host()]
    listing = "".join(f"{r}\t{sizes[r]}\t{_sha(Path(lp))}\n" for lp, r in files).encode()

    def recheck(t):  # what the exec step asks: the site's answer, by content
        done = t.run(["python3", "-S", TOOL, "missing", "--root", str(site), "--manifest", manifest], input=listing)
        wanted = {line.rsplit("\t", 2)[0] for line in done.text.splitlines() if line}
        return [p for p in files if p[1] in wanted]

    report = push_fanout(hosts, unpack, files, sizes, streams=2, bundle_bytes=1 * MB, recheck=recheck)

    assert report.lost_hosts == (1,) and report.rechecks == 1
    assert set(report.bytes_by_host) == {0, 2}  # the lost host finished no lane
    for lp, remote in files:  # every file in place, whole, its content right
        assert _sha(Path(remote)) == _sha(Path(lp)), remote
    leftovers = [p for p in site.rglob("*") if ".part." in p.name]
    assert leftovers == []
    # invocations: 3 hosts x 2 streams, one re-check, the re-sent lanes over the 2 hosts left
    assert sum(h.invocations for h in hosts) <= 6 + 1 + 2 * 2
    assert hosts[1].invocations == 2


def test_every_host_lost_is_a_link_down_error(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(os.urandom(400_000))
    files, sizes = [(str(src), f"{tmp_path}/site/f")], {f"{tmp_path}/site/f": 400_000}
    unpack = ["python3", "-S", TOOL, "unpack", "--root", str(tmp_path / "site")]
    with pytest.raises(LinkDownError, match="link to site mu is down"):
        push_fanout([_Host(cut_after=1000), _Host(cut_after=1000)], unpack, files, sizes, streams=1, recheck=lambda t: files)
    assert not (tmp_path / "site" / "f").exists()
    assert not [p for p in (tmp_path / "site").rglob("*") if p.is_file()]


def test_a_refusal_is_not_retried_elsewhere(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    files, sizes = [(str(src), "/outside/f")], {"/outside/f": 1}
    unpack = ["python3", "-S", TOOL, "unpack", "--root", str(tmp_path / "site")]
    hosts = [_Host(), _Host()]
    with pytest.raises(Exception, match="not under any --root") as err:
        push_fanout(hosts, unpack, files, sizes, streams=1, recheck=lambda t: files)
    assert not isinstance(err.value, LinkDownError)
    assert sum(h.invocations for h in hosts) == 1
    assert subprocess.run(["test", "-e", "/outside/f"]).returncode == 1


def test_each_front_end_has_its_own_session_slots():
    """sshd's MaxSessions is per connection: streams on the other front ends must not wait
    for the first one's slots (a wait past the timeout would count a live host as lost)."""
    import shutil
    import tempfile
    from contextlib import ExitStack

    from scbundle.core.config import Site
    from scbundle.core.errors import LinkDownError as Down
    from scbundle.site.link.openssh import OpenSshTransport

    control = Path(tempfile.mkdtemp(prefix="scbu-", dir="/tmp")) / "c"  # a ControlPath stays short
    site = Site.model_validate({"link": "ssh", "remote_root": "/r", "permanent_root": "/p",
                                "ssh": {"hosts": ["fe1.invalid", "fe2.invalid"], "user": "op", "control_dir": str(control),
                                        "max_sessions": 2}})  # fmt: skip
    t = OpenSshTransport("mu", site)
    first, second = t.pinned(0), t.pinned(1)
    with ExitStack() as held:
        for _ in range(2):  # every slot of the first front end taken
            held.enter_context(first._slot())
        with pytest.raises(Down, match="no free session slot"):
            with t.link.session_slot(timeout=0, host=0):
                pass
        with second._slot() as n:  # the second front end's own
            assert n == 0
    assert sorted(p.name for p in control.iterdir() if "slot" in p.name) == ["mu.h1.slot.0", "mu.slot.0", "mu.slot.1"]
    shutil.rmtree(control.parent)
