"""The vocabulary of states and fault codes, as the operators already know them."""

from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    NEW = "new"
    PENDING = "pending"
    RUN = "run"
    FULL = "full"
    ERROR = "error"
    AUTH = "auth"


#: Runs that still own their components (a piece of work is in at most one of these).
LIVE_RUN_STATES = frozenset({RunState.NEW, RunState.PENDING, RunState.RUN, RunState.ERROR, RunState.AUTH})


class ComponentState(enum.StrEnum):
    NEW = "new"  # defined, not yet in a prepared bundle
    PENDING = "pending"  # in the prepared bundle, waiting for the job
    RUN = "run"  # the job holding it was submitted
    FULL = "full"  # its result was replayed into the tables
    ERROR = "error"  # failed, with a fault; revert puts it back in line
    ABANDONED = "abandoned"  # failed max_attempts times: reported, not retried


class Fault(enum.IntEnum):
    NONE = 0
    UNKNOWN = 1
    SYSTEM = 2  # system call or network: safe to revert automatically
    CONFIG = 3
    PROGRAM = 4
    DATA = 5
    TIMEOUT = 6


def fault_from_exit(code: int) -> Fault:
    """Pipeline programs exit with their fault code; anything else is 'unknown'."""
    if code == 0:
        return Fault.NONE
    if code == 124:  # timeout(1)'s convention
        return Fault.TIMEOUT
    if 2 <= code <= 6:
        return Fault(code)
    return Fault.UNKNOWN


MAX_ATTEMPTS = 2
