"""The vocabulary of states and fault codes, as the operators already know them, and the one
table of the run transitions every step makes (``TRANSITIONS``): which step moves a run from
which state to which, and the operator's way out of each state."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from scbundle.core.protocol import PROTOCOL as P


class RunState(enum.StrEnum):
    NEW = "new"
    PENDING = "pending"
    RUN = "run"
    FULL = "full"
    ERROR = "error"
    AUTH = "auth"
    RETIRED = "retired"  # taken out by the operator: its components released or abandoned


#: Runs that still own their components (a piece of work is in at most one of these).
LIVE_RUN_STATES = frozenset({RunState.NEW, RunState.PENDING, RunState.RUN, RunState.ERROR, RunState.AUTH})


class ComponentState(enum.StrEnum):
    NEW = "new"  # defined, not yet in a prepared bundle
    PENDING = "pending"  # in the prepared bundle, waiting for the job
    RUN = "run"  # the job holding it was submitted
    FULL = "full"  # its result was replayed into the tables
    ERROR = "error"  # failed, with a fault; revert puts it back in line
    ABANDONED = "abandoned"  # failed max_attempts times: reported, not retried (revert --abandoned retries it)


#: components that still have work ahead of them in their run
OPEN_COMPONENT_STATES = frozenset({ComponentState.NEW, ComponentState.PENDING, ComponentState.RUN})


class Fault(enum.IntEnum):
    NONE = 0
    UNKNOWN = 1
    SYSTEM = 2  # system call or network: safe to revert automatically
    CONFIG = 3
    PROGRAM = 4
    DATA = 5
    TIMEOUT = 6


# --- the run transitions -----------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    src: RunState
    dst: RunState
    by: str  # the step or command that makes it
    when: str  # why, in an operator's words


_N, _P, _R, _F, _E, _A, _X = (RunState.NEW, RunState.PENDING, RunState.RUN, RunState.FULL, RunState.ERROR,
                              RunState.AUTH, RunState.RETIRED)  # fmt: skip

TRANSITIONS: tuple[Transition, ...] = (
    Transition(_N, _P, "prepare", "the bundle is built"),
    Transition(_N, _E, "prepare", "no component can run, or the bundle cannot be built (disk full, a request over max_walltime)"),
    Transition(_P, _P, "prepare", "the bundle is built again and swapped in"),
    Transition(_P, _E, "prepare", "building it again failed (the old bundle stays)"),
    Transition(_P, _R, "exec", "the bundle is shipped and the job submitted"),
    Transition(_P, _E, "exec", "shipping failed"),
    Transition(_P, _A, "exec", "the link is down: nothing changed"),
    Transition(_R, _F, "poll", "the job ended and nothing is left to run"),
    Transition(_R, _E, "poll", "the job ended with failed components, or what it returned is refused"),
    Transition(_R, _A, "poll", "the link is down: nothing changed"),
    Transition(_E, _N, "revert", "failed components back in line under a new attempt"),
    Transition(_E, _P, "revert", "it failed before any job ran: the bundle still stands"),
    Transition(_E, _F, "revert", "every failure is abandoned: nothing is left to run"),
    Transition(_F, _N, "revert", "abandoned components back in line (revert --abandoned)"),
    Transition(_A, _P, "revert", "the link is back (revert --auth)"),
    Transition(_A, _R, "revert", "the link is back (revert --auth)"),
    Transition(_N, _X, "retire", "taken out by the operator"),
    Transition(_P, _X, "retire", "taken out by the operator"),
    Transition(_R, _X, "retire", "taken out by the operator (its job cancelled)"),
    Transition(_E, _X, "retire", "taken out by the operator"),
    Transition(_A, _X, "retire", "taken out by the operator"),
)

#: commands a person runs to move a run (the steps the daemon runs on its own are the others)
OPERATOR_COMMANDS = ("revert", "retire", "cancel", "prepare", "exec", "poll")
#: states a run ends in: full (nothing left to run; with abandoned components `revert
#: --abandoned` reopens it) and retired (final by the operator's choice)
FINAL_STATES = frozenset({RunState.FULL, RunState.RETIRED})


def allowed(src: str, dst: str, by: str) -> bool:
    return any(t.src == src and t.dst == dst and t.by == by for t in TRANSITIONS)


def exits(state: str) -> list[Transition]:
    """The transitions out of ``state`` (to another state)."""
    return [t for t in TRANSITIONS if t.src == state and t.dst != state]


# --- faults --------------------------------------------------------------------------------


#: a pipeline program's exit code -> fault, when the stage says nothing else: the operators'
#: codes 2-6 as themselves, timeout(1)'s 124 as a timeout; anything else is unknown (1)
#: (remote/sc_protocol.py holds the codes, the runner reads the same)
DEFAULT_FAULT_MAP: Mapping[int, Fault] = {code: Fault(f) for code, f in P.DEFAULT_FAULT_MAP.items()}
#: faults worth another try inside the same job: a system hiccup, a timeout
DEFAULT_RETRY_FAULTS = frozenset(Fault(f) for f in P.DEFAULT_RETRY_FAULTS)


@dataclass(frozen=True)
class FaultPolicy:
    """How a stage's exit codes read as faults, and which faults are tried again in the job."""

    fault_map: Mapping[int, Fault]
    retry: frozenset[Fault]

    def fault(self, code: int) -> Fault:
        if code == 0:
            return Fault.NONE
        return Fault(self.fault_map.get(code, Fault.UNKNOWN))

    def retried(self, code: int) -> bool:
        """Whether a command that exited ``code`` is tried again inside the job (the runner
        decides the same from bundle.json's fault_map and retry_faults)."""
        return code != 0 and self.fault(code) in self.retry


DEFAULT_POLICY = FaultPolicy(DEFAULT_FAULT_MAP, DEFAULT_RETRY_FAULTS)


def fault_from_exit(code: int) -> Fault:
    """The default reading of a program's exit code (stages may declare their own map)."""
    return DEFAULT_POLICY.fault(code)


MAX_ATTEMPTS = 2  # jobs a component may fail in before revert abandons it


# --- a run's state from its components --------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """A run's components by state, and the faults of the failed (error) and abandoned ones."""

    open: int = 0  # new, pending or run
    full: int = 0
    error: int = 0
    abandoned: int = 0
    error_faults: Mapping[int, int] | None = None
    abandoned_faults: Mapping[int, int] | None = None

    @property
    def total(self) -> int:
        return self.open + self.full + self.error + self.abandoned


def _most_common(faults: Mapping[int, int] | None) -> int:
    if not faults:
        return int(Fault.UNKNOWN)
    return max(sorted(faults), key=lambda f: faults[f])


def settle(c: Counts, *, job_policy: str = "fatal", note: str = "") -> tuple[RunState, int, str | None]:
    """The state, fault and message of a run whose job is over, from its components' counts:
    the one rule poll and revert both follow, so the three always agree with the counts.

    - error components (revertable) make it ``error`` with their most common fault, unless
      ``job_policy`` is "ignore";
    - otherwise it is ``full``; abandoned components (and, under "ignore", failed ones) are
      reported in its fault and message, so a full run with failures never reads as clean.
    """
    if c.open:
        raise ValueError(f"a run with {c.open} open component(s) is not settled")
    if c.error and job_policy != "ignore":
        msg = f"{c.error} of {c.total} component(s) failed" + (f", {c.abandoned} abandoned" if c.abandoned else "")
        return RunState.ERROR, _most_common(c.error_faults), msg + (f" ({note})" if note else "")
    if c.error or c.abandoned:
        faults = dict(c.abandoned_faults or {})
        for f, n in (c.error_faults or {}).items():
            faults[f] = faults.get(f, 0) + n
        parts = []
        if c.abandoned:
            parts.append(f"{c.abandoned} of {c.total} component(s) abandoned (`scbundle revert --abandoned` retries them)")
        if c.error:
            parts.append(f"{c.error} failed, ignored by job_policy")
        return RunState.FULL, _most_common(faults), "; ".join(parts)
    return RunState.FULL, 0, None
