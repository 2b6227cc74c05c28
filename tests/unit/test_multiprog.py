import random

import pytest

from scbundle.bundle.multiprog import (
    MAX_CONFIG_BYTES,
    deal_by_cost,
    encode_ids,
    pack_configs,
    srun_quote,
)
from scbundle.core.errors import BundleError


def test_encode_ids_ranges():
    assert encode_ids([0, 1, 2, 5, 7, 8, 9, 12]) == "0-2,5,7-9,12"
    assert encode_ids([3]) == "3"
    assert encode_ids([]) == ""


def test_deal_by_cost_longest_first_balances_better_than_round_robin():
    rng = random.Random(7)
    costs = [rng.choice([10, 10, 10, 200]) for _ in range(400)]
    nranks = 16
    ranks = deal_by_cost(costs, nranks)
    assert sorted(i for r in ranks for i in r) == list(range(400))  # each exactly once
    lpt = max(sum(costs[i] for i in r) for r in ranks)
    rr = max(sum(costs[i] for i in range(k, 400, nranks)) for k in range(nranks))
    assert lpt < rr
    assert lpt - min(sum(costs[i] for i in r) for r in ranks) <= max(costs)  # LPT bound


def test_srun_quote():
    assert srun_quote("/a/b.py") == "/a/b.py"
    assert srun_quote("/a b/c") == "'/a b/c'"
    with pytest.raises(BundleError):
        srun_quote("it's")
    with pytest.raises(BundleError):
        srun_quote("50%t")


def _line(task, offset, ids):
    return f"{task} python3 /tools/sc_runner.py run /runs/chip.1.a1 --rank %t --offset {offset} --ids {ids}"


def test_pack_37200_components_stays_under_limits():
    ranks = deal_by_cost([150.0] * 37200, 1944)
    parts = pack_configs(ranks, _line, lambda i, off: f"# part {i} offset {off}\n")
    assert len(parts) > 1
    assert sum(p.ntasks for p in parts) == 1944
    seen = []
    for p in parts:
        assert len(p.text.encode()) <= MAX_CONFIG_BYTES
        lines = [ln for ln in p.text.splitlines() if not ln.startswith("#")]
        assert [int(ln.split()[0]) for ln in lines] == list(range(p.ntasks))  # tasks 0..n-1 in each config
        assert all(f"--offset {p.offset} " in ln for ln in lines)
        assert max(len(ln) for ln in lines) < 16382
        for ln in lines:
            spec = ln.rsplit(" ", 1)[1]
            for part in spec.split(","):
                a, _, b = part.partition("-")
                seen.extend(range(int(a), int(b or a) + 1))
    assert sorted(seen) == list(range(37200))
    assert parts[-1].offset + parts[-1].ntasks == 1944


def test_pack_exact_limit_boundary():
    ranks = [[i] for i in range(10)]
    line = lambda t, o, ids: f"{t} x {ids}".ljust(99, "y")  # noqa: E731  100 bytes with newline
    parts = pack_configs(ranks, line, lambda i, o: "", max_bytes=500)
    assert [p.ntasks for p in parts] == [5, 5]
    assert all(len(p.text) == 500 for p in parts)


def test_overlong_line_refused():
    with pytest.raises(BundleError, match="characters"):
        pack_configs([list(range(0, 20000, 2))], _line, lambda i, o: "")
