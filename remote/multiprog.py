"""Parser for ``srun --multi-prog`` configuration files, with Slurm 22.05 semantics.

Python 3 standard library only (3.9+).  Used by ``bin/srun`` (the emulator of the
``local`` scheduler) and unit-testable on its own: ``parse_config(text, ntasks)``
returns the argv of every task.

Real Slurm reads a config in two places, and this module mirrors both:

* srun, ``_load_multi()`` (src/plugins/launch/slurm/launch_slurm.c): the file is
  refused when it is over 60000 bytes; its whole text is shipped to the nodes.
* srun, ``verify_multi_name()`` (src/srun/libsrun/multi_prog.c): reads the file
  with ``fgets()`` into a ``BUF_SIZE`` (16 KiB) buffer; a line whose length
  *including its newline* is 16383 bytes or more is "too long" (so 16381
  characters plus newline pass, 16382 plus newline fail); ``#`` comment lines and
  blank lines are skipped; a line ending in a backslash makes the next line a
  continuation (not validated); the first two words are the rank spec and the
  program; rank specs are ``*`` or comma lists of ``N`` and ``N-M``; ``*`` must be
  the last spec; duplicates are refused (except under ``*``); every rank
  ``0..ntasks-1`` needs a line.
* slurmstepd, ``multi_prog_get_argv()`` (src/slurmd/slurmstepd/multi_prog.c):
  builds one task's argv from the first line whose rank spec holds the rank:
  words are split on whitespace; ``%t`` becomes the rank and ``%o`` the task's
  offset within that line's rank list (for ``*`` the rank itself); any other
  character after ``%`` is dropped together with the ``%``; a backslash takes the
  next character literally (at the end of a line it joins the next line); single
  quotes group characters and nothing is substituted inside them; double quotes
  are ordinary characters (``"a b"`` gives the two words ``"a`` and ``b"``);
  the argv array has ``MAX_ARGC`` = 128 slots including the terminating NULL, so
  a task gets at most 127 words (program included).  Extra words given to srun
  after the config file name are appended to every task's argv.

Where Slurm's own behaviour is undefined or silent, the emulator refuses loudly
instead (raises ``MultiProgError``):

* more than 127 words for a task: Slurm logs "Exceeded multi-prog argc limit"
  in the slurmd log and silently drops the rest (``truncate_argc=True`` mirrors
  that);
* a ``%`` as the last character of a line: Slurm reads past the end of the line;
* errors that real Slurm only meets on the node when the task starts
  (unterminated single quote, no line for a rank after continuation lines) are
  reported before any task starts.
* a NUL byte in the file (C string handling would cut the text there).
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# _load_multi(): st_size > 60000 -> "is too large"; slurmstepd multi_prog.c: argv slots
# including the NULL terminator (remote/sc_protocol.py holds them, the bundle packs to them)
from sc_protocol import MAX_ARGC, MAX_CONFIG_BYTES, MAX_WORDS  # noqa: E402

BUF_SIZE = 16 * 1024  # src/common/pack.h; verify_multi_name() reads with fgets(line, BUF_SIZE)
EMULATOR_MAX_TASKS = 100000  # only reached when the task count grows from the config

_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_STRTOK_DELIMS = " \t\n"  # verify_multi_name(): strtok_r(p, " \t\n", ...)
_DIGITS = "0123456789"


class MultiProgError(Exception):
    """A config Slurm would refuse; ``messages`` are the lines srun prints after
    ``srun: error: ``."""

    def __init__(self, *messages: str) -> None:
        self.messages = [m for m in messages if m]
        super().__init__("\n".join(self.messages))


def _atoi(s: str) -> int:
    """C atoi(): optional leading whitespace and sign, then digits; 0 if none."""
    i = 0
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    sign = 1
    if i < len(s) and s[i] in "+-":
        sign = -1 if s[i] == "-" else 1
        i += 1
    j = i
    while j < len(s) and s[j] in _DIGITS:
        j += 1
    return sign * int(s[i:j]) if j > i else 0


def _digit_prefix(s: str) -> int:
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        i += 1
    return i


def _lstrip_c(s: str) -> str:
    i = 0
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    return s[i:]


def _fgets_lines(text: str):
    """Lines as fgets() returns them: each with its newline, the last maybe without."""
    start = 0
    n = len(text)
    while start < n:
        i = text.find("\n", start)
        if i < 0:
            yield text[start:]
            return
        yield text[start : i + 1]
        start = i + 1


def _byte_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------------------
# srun side: verify_multi_name()
# --------------------------------------------------------------------------------------


class _Verifier:
    def __init__(self, ntasks: int, ntasks_set: bool) -> None:
        self.ntasks = ntasks
        self.ntasks_set = ntasks_set
        self.i_set_ntasks = False
        self.has_asterisk = False
        self.mask: set = set()

    def update_mask(self, low: int, high: int, ignore_duplicates: bool) -> Optional[str]:
        if low > high:
            return "Invalid task range, %d-%d" % (low, high)
        if low < 0:
            return "Invalid task id, %d < 0" % low
        if high >= self.ntasks:
            if self.ntasks_set and not self.i_set_ntasks:
                return "Invalid task id, %d >= ntasks" % high
            if high + 1 > EMULATOR_MAX_TASKS:
                return "Invalid task id, %d: the srun emulator runs at most %d tasks" % (
                    high,
                    EMULATOR_MAX_TASKS,
                )
            self.ntasks = high + 1
            self.ntasks_set = True
            self.i_set_ntasks = True
        for i in range(low, high + 1):
            if i in self.mask:
                if ignore_duplicates:
                    continue
                return "Duplicate record for task %d" % i
            self.mask.add(i)
        return None

    def validate_ranks(self, ranks: str) -> Optional[str]:
        if ranks == "*":
            self.ntasks_set = True  # do not allow to change later
            self.has_asterisk = True  # must be the last MPMD spec line
            return self.update_mask(0, self.ntasks - 1, True)
        for rng in ranks.split(","):
            if not rng:  # strtok_r skips empty tokens
                continue
            k = _digit_prefix(rng)
            rest = rng[k:]
            if self.has_asterisk:
                return "Task range specification with asterisk must be last"
            if rest == "":
                low = high = _atoi(rng)
            elif rest[0] == "-":
                upper = rest[1:]
                if _digit_prefix(upper) != len(upper):
                    return "Invalid task range specification"
                low = _atoi(rng)
                high = _atoi(upper)
            else:
                return "Invalid task range specification (%s)" % rng
            err = self.update_mask(low, high, False)
            if err:
                return err
        return None


def verify_config(text: str, ntasks: int, ntasks_set: bool = True, conf_name: str = "") -> int:
    """srun's checks; returns the (possibly grown) task count or raises MultiProgError."""
    conf = conf_name or "<config>"
    if "\0" in text:
        raise MultiProgError(
            "Multi_prog config file %s holds a NUL byte (Slurm would silently cut the "
            "text there; refused by the srun emulator)" % conf
        )
    size = _byte_len(text)
    if size > MAX_CONFIG_BYTES:
        raise MultiProgError("Multi_prog config file %s is too large" % conf)
    if ntasks <= 0:
        raise MultiProgError("Invalid task count %d" % ntasks)
    v = _Verifier(ntasks, ntasks_set)
    last_line_break = False
    for line_num, line in enumerate(_fgets_lines(text), start=1):
        if _byte_len(line) >= BUF_SIZE - 1:
            raise MultiProgError("Line %d of configuration file %s too long" % (line_num, conf))
        line_break = line.endswith("\\") or line.endswith("\\\n")
        if last_line_break:
            last_line_break = line_break
            continue
        last_line_break = line_break
        p = _lstrip_c(line)
        if p.startswith("#"):  # only whole-line comments
            continue
        if p == "":
            continue
        words = _strtok(p, _STRTOK_DELIMS)
        if len(words) < 2:
            raise MultiProgError("Line %d of configuration file %s invalid" % (line_num, conf))
        err = v.validate_ranks(words[0])
        if err:
            raise MultiProgError(err, "Line %d of configuration file %s invalid" % (line_num, conf))
    for i in range(v.ntasks):
        if i not in v.mask:
            raise MultiProgError(
                "Configuration file %s invalid, no record for task id %d" % (conf, i)
            )
    return v.ntasks


def _strtok(s: str, delims: str) -> List[str]:
    out: List[str] = []
    cur: List[str] = []
    for ch in s:
        if ch in delims:
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


# --------------------------------------------------------------------------------------
# slurmstepd side: multi_prog_get_argv()
# --------------------------------------------------------------------------------------


def _in_range(rank: int, spec: str) -> Optional[int]:
    """The rank's offset within the line's rank list, or None if not listed."""
    if spec == "*":
        return rank
    passed = 0
    for rng in spec.split(","):
        if not rng:
            continue
        k = _digit_prefix(rng)
        rest = rng[k:]
        if rest == "":
            if rank == _atoi(rng):
                return passed
            passed += 1
        elif rest[0] == "-":
            upper = rest[1:]
            if _digit_prefix(upper) != len(upper):
                continue  # "Invalid task range specification (%s) ignored."
            low = _atoi(rng)
            high = _atoi(upper)
            if low <= rank <= high:
                return passed + (rank - low)
            passed += 1 + high - low
        # else: "Invalid task range specification (%s) ignored."
    return None


def _segments(text: str) -> List[str]:
    return [s for s in text.split("\n") if s]  # strtok_r(data, "\n") skips empty lines


def _candidates(segs: List[str]):
    """The lines slurmstepd looks at, in order, whatever the rank:
    ``(next segment index, line number, rank spec or None if malformed, rest)``."""
    out = []
    i = 0
    line_num = 0
    last_line_break = False
    while i < len(segs):
        line = segs[i]
        i += 1
        line_num += 1
        line_break = line.endswith("\\")
        if last_line_break:  # continuation of the line before
            last_line_break = line_break
            continue
        last_line_break = line_break
        p = _lstrip_c(line)
        if p.startswith("#") or p == "":
            continue
        k = 0
        while k < len(p) and p[k] not in _C_SPACE:
            k += 1
        if k >= len(p):
            out.append((i, line_num, None, ""))
        else:
            out.append((i, line_num, p[:k], p[k + 1 :]))
    return out


def _build_argv(segs, i, line_num, s, rank, offset, extra_args, truncate_argc, conf):
    """multi_prog_get_argv() from the character after the rank spec of the matching line;
    ``i`` is the index of the next segment (for continuation lines)."""
    nseg = len(segs)
    j = 0
    while j < len(s) and s[j] in _C_SPACE:
        j += 1

    argv: List[str] = []
    arg: Optional[str] = None
    overflow = False

    def _overflow_error() -> MultiProgError:
        return MultiProgError(
            "Exceeded multi-prog argc limit: task %d of configuration file %s would get "
            "more than %d words (program and arguments); Slurm 22.05 silently drops the "
            "rest (MAX_ARGC %d includes the NULL terminator)" % (rank, conf, MAX_WORDS, MAX_ARGC)
        )

    while j < len(s):
        if arg is not None:
            argv.append(arg)
            arg = None
        if len(argv) + 1 >= MAX_ARGC:
            overflow = True
            break
        # CONT: grow one argument
        end_of_args = False
        while True:
            start = j
            while j < len(s) and s[j] not in "\\%'" and s[j] not in _C_SPACE:
                j += 1
            arg = (arg or "") + s[start:j]
            if j >= len(s):
                end_of_args = True  # the last argument
                break
            c = s[j]
            if c == "%":
                if j + 1 >= len(s):
                    raise MultiProgError(
                        "Line %d of configuration file %s ends in '%%': Slurm 22.05 reads "
                        "past the end of the line there; refused by the srun emulator"
                        % (line_num, conf)
                    )
                j += 1
                if s[j] == "t":
                    arg += str(rank)
                elif s[j] == "o":
                    arg += str(offset)
                j += 1  # the character after '%' is consumed whatever it is
                continue
            if c == "\\":
                j += 1
                if j < len(s):
                    arg += s[j]
                    j += 1
                else:  # backslash-newline: continue on the next line
                    if i >= nseg:
                        end_of_args = True
                        break
                    s = segs[i]
                    i += 1
                    line_num += 1
                    j = 0
                continue
            if c == "'":
                j += 1
                qline, qstart = s, j
                crossed = False
                while True:  # LINE_BREAK
                    while j < len(s) and s[j] != "'":
                        j += 1
                    if j < len(s):
                        break
                    # closing quote not found on this line
                    if j > 0 and s[j - 1] == "\\" and i < nseg:
                        s = segs[i]
                        i += 1
                        line_num += 1
                        j = 0
                        crossed = True
                        continue
                    raise MultiProgError(
                        "Program arguments specification format invalid: %s."
                        % (argv[-1] if argv else "")
                    )
                if crossed:
                    # xstrncat(arg_buf, p, n) stops at the NUL that ended the
                    # first line: the quoted text on later lines is lost.
                    arg += qline[qstart:]
                else:
                    arg += s[qstart:j]
                j += 1  # skip the closing quote
                continue
            # whitespace ends the argument
            while j < len(s) and s[j] in _C_SPACE:
                j += 1
            break
        if end_of_args:
            break
    if overflow and not truncate_argc:
        raise _overflow_error()
    if arg is not None:
        argv.append(arg)
    for extra in extra_args:
        if len(argv) + 1 >= MAX_ARGC:
            if not truncate_argc:
                raise _overflow_error()
            break
        argv.append(extra)
    if not argv:
        raise MultiProgError("No executable program specified for task %d" % rank)
    return argv


def task_argv(
    text: str,
    rank: int,
    extra_args: Sequence[str] = (),
    truncate_argc: bool = False,
    conf_name: str = "",
) -> List[str]:
    """The argv slurmstepd builds for one task (rank) from the config text."""
    conf = conf_name or "<config>"
    if rank < 0:
        raise MultiProgError("Invalid task rank %d" % rank)
    segs = _segments(text)
    for i, line_num, spec, rest in _candidates(segs):
        if spec is None:
            raise MultiProgError("Invalid MPMD configuration line %d" % line_num)
        offset = _in_range(rank, spec)
        if offset is not None:
            return _build_argv(segs, i, line_num, rest, rank, offset, extra_args,
                               truncate_argc, conf)
    raise MultiProgError("Program for task rank %d not specified." % rank)


def _assign_lines(cands, ntasks: int):
    """rank -> (candidate index, offset) for every rank some line holds, the first
    matching line winning (what _in_range() per rank gives, in one pass); and the
    index of the first malformed line, which ranks not matched before it hit."""
    assign = {}
    for ci, (_, _, spec, _) in enumerate(cands):
        if spec is None:
            return assign, ci
        if spec == "*":
            for r in range(ntasks):
                assign.setdefault(r, (ci, r))
            continue
        passed = 0
        for rng in spec.split(","):
            if not rng:
                continue
            k = _digit_prefix(rng)
            rest = rng[k:]
            if rest == "":
                r = _atoi(rng)
                if 0 <= r < ntasks:
                    assign.setdefault(r, (ci, passed))
                passed += 1
            elif rest[0] == "-":
                upper = rest[1:]
                if _digit_prefix(upper) != len(upper):
                    continue
                low, high = _atoi(rng), _atoi(upper)
                for r in range(max(low, 0), min(high, ntasks - 1) + 1):
                    assign.setdefault(r, (ci, passed + (r - low)))
                passed += 1 + high - low
    return assign, None


def parse_config_ex(
    text: str,
    ntasks: int,
    ntasks_set: bool = True,
    conf_name: str = "",
    extra_args: Sequence[str] = (),
    truncate_argc: bool = False,
) -> Tuple[int, List[List[str]]]:
    """srun's checks then every task's argv: ``(ntasks, [argv of task 0, ...])``.

    ``ntasks_set=False`` mirrors srun run without ``-n`` (and without
    SLURM_NTASKS): the task count grows to cover the highest rank in the file.
    """
    n = verify_config(text, ntasks, ntasks_set=ntasks_set, conf_name=conf_name)
    conf = conf_name or "<config>"
    segs = _segments(text)
    cands = _candidates(segs)
    assign, first_bad = _assign_lines(cands, n)
    argvs = []
    for r in range(n):
        if r not in assign:
            if first_bad is not None:
                raise MultiProgError("Invalid MPMD configuration line %d" % cands[first_bad][1])
            raise MultiProgError("Program for task rank %d not specified." % r)
        ci, offset = assign[r]
        i, line_num, _, rest = cands[ci]
        argvs.append(
            _build_argv(segs, i, line_num, rest, r, offset, extra_args, truncate_argc, conf)
        )
    return n, argvs


def parse_config(
    text: str,
    ntasks: int,
    *,
    conf_name: str = "",
    extra_args: Sequence[str] = (),
    truncate_argc: bool = False,
) -> List[List[str]]:
    """The argv of each task 0..ntasks-1, as Slurm 22.05 would run them.

    Raises MultiProgError (``.messages`` holds srun's error lines) when srun would
    refuse the config, or when the emulator refuses what Slurm leaves undefined.
    """
    return parse_config_ex(
        text,
        ntasks,
        ntasks_set=True,
        conf_name=conf_name,
        extra_args=extra_args,
        truncate_argc=truncate_argc,
    )[1]
