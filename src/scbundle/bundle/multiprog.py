"""Dealing components to ranks and packing srun --multi-prog configs under Slurm's limits.

Facts (Slurm 22.05, src/srun/libsrun/multi_prog.c): a config over 60000 bytes is refused,
a line of 16382 characters or more is refused, at most 127 words a line (slurmstepd's argv has 128 slots, one for the terminator), %t is not
substituted inside single quotes, single quotes group words, double quotes do not.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scbundle.core.errors import BundleError
from scbundle.core.protocol import PROTOCOL as P

# Slurm's limits: remote/sc_protocol.py (the srun emulator, remote/multiprog.py, reads the same)
MAX_CONFIG_BYTES: int = P.MAX_CONFIG_BYTES
MAX_LINE_CHARS: int = P.MAX_LINE_CHARS  # a line of 16382 characters or more is refused
MAX_ARGS: int = P.MAX_WORDS  # argv has 128 slots with its terminator; Slurm silently drops the rest


def deal_by_cost(costs: Sequence[float], nranks: int) -> list[list[int]]:
    """Longest first, each to the least-loaded rank (LPT). Each rank's list is in index order."""
    if nranks <= 0:
        raise BundleError("need at least one rank")
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, r) for r in range(nranks)]
    ranks: list[list[int]] = [[] for _ in range(nranks)]
    for i in order:
        load, r = heapq.heappop(heap)
        ranks[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    for lst in ranks:
        lst.sort()
    return [lst for lst in ranks if lst]


def encode_ids(ids: Sequence[int]) -> str:
    """Sorted indices as ``0,5-9,12`` (the runner's --ids syntax)."""
    parts: list[str] = []
    i = 0
    s = sorted(ids)
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(parts)


def srun_quote(word: str) -> str:
    """Quote one argument for a multi-prog line: single quotes group words; no way to escape '."""
    if "'" in word or "\n" in word or "%" in word:
        raise BundleError(f"cannot put {word!r} in a multi-prog config (single quote, newline or % in it)")
    if word and all(c.isalnum() or c in "/._-+=:," for c in word):
        return word
    return f"'{word}'"


@dataclass(frozen=True)
class ConfigPart:
    """One multi-prog config: its text and the global ranks it covers.

    When every part starts on a node boundary, ``first_node`` and ``nodes`` say which nodes
    of the allocation the step runs on (srun -N nodes --relative=first_node); otherwise
    (one node's lines alone overflow a config) they are None and the step shares nodes.
    """

    index: int
    offset: int  # global rank of its task 0
    ntasks: int
    text: str
    first_node: int | None = None
    nodes: int | None = None

    @property
    def name(self) -> str:
        return f"part-{self.index:03d}.conf"


def _check_line(line: str, max_line: int) -> None:
    if len(line) > max_line:
        raise BundleError(f"one rank's line is {len(line)} characters, over srun's {max_line}: use more ranks")
    if len(line.split()) > MAX_ARGS:
        raise BundleError(f"one rank's line has {len(line.split())} words, over srun's {MAX_ARGS}")


def pack_configs(
    rank_ids: Sequence[Sequence[int]],
    render_line: Callable[[int, int, str], str],
    header: Callable[[int, int], str],
    *,
    max_bytes: int = MAX_CONFIG_BYTES,
    max_line: int = MAX_LINE_CHARS,
    ranks_per_node: int = 1,
) -> list[ConfigPart]:
    """Fill configs with one line per rank, each config under ``max_bytes``, cutting only
    between nodes (groups of ``ranks_per_node`` consecutive ranks) so the steps can run on
    disjoint node sets.

    ``render_line(task, offset, ids_spec)`` gives a line (no newline) for local task number
    ``task`` of a config whose first global rank is ``offset``; ``header(part_index, offset)``
    gives the comment block that opens each file.
    """
    specs = [encode_ids(ids) for ids in rank_ids]
    rpn = max(1, ranks_per_node)
    aligned = _pack(specs, render_line, header, max_bytes, max_line, rpn)
    if aligned is not None:
        return aligned
    unaligned = _pack(specs, render_line, header, max_bytes, max_line, 1)
    assert unaligned is not None
    return [ConfigPart(p.index, p.offset, p.ntasks, p.text) for p in unaligned]


def _pack(specs, render_line, header, max_bytes, max_line, rpn) -> list[ConfigPart] | None:
    """Greedy packing in groups of ``rpn`` ranks; None if one group alone overflows a config."""
    parts: list[ConfigPart] = []
    offset = 0
    lines: list[str] = []
    head = header(0, 0)
    size = len(head.encode())

    def close() -> None:
        nonlocal lines, offset, head, size
        parts.append(ConfigPart(len(parts), offset, len(lines), head + "".join(lines), offset // rpn, -(-len(lines) // rpn)))
        offset += len(lines)
        lines = []
        head = header(len(parts), offset)
        size = len(head.encode())

    for g in range(0, len(specs), rpn):
        group = specs[g : g + rpn]
        rendered = [render_line(len(lines) + k, offset, spec) for k, spec in enumerate(group)]
        for line in rendered:
            _check_line(line, max_line)
        nbytes = sum(len(x.encode()) + 1 for x in rendered)
        if lines and size + nbytes > max_bytes:
            close()
            rendered = [render_line(k, offset, spec) for k, spec in enumerate(group)]
            nbytes = sum(len(x.encode()) + 1 for x in rendered)
        if size + nbytes > max_bytes:
            if rpn > 1:
                return None
            raise BundleError(f"a single multi-prog line of {nbytes} bytes does not fit a {max_bytes}-byte config")
        lines += [x + "\n" for x in rendered]
        size += nbytes
    if lines:
        close()
    return parts
