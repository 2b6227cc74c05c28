"""Names that become paths and job names, here and on the site: labels, stage names, job names.

Pure checks. A label names directories (the workdir's <label>/, each stage's <root>/<stage>/<label>/
on both sides) and a stage name is part of a run directory and of a job name, so both are kept
to plain characters: no "/", no leading "." (so never ".." or a hidden name), no leading "-"
(never taken for an option), no whitespace, quote or control character, and a length that fits
every path and job-name limit on the way (a 64-character label in a path; Slurm and Moab job
names are 1-64+ characters).

    label     1-64 of  A-Z a-z 0-9 _ . + -   not starting with . or -   ("PV3.lanl", "2024-06_b+2")
    stage     1-32 of  A-Z a-z 0-9 _         starting with a letter      (a Python identifier, ASCII)
    job name  1-128 of A-Z a-z 0-9 _ . + -   starting with a letter or digit

Every check raises UnsafeNameError naming the value (shortened, with control characters escaped,
so the message stays one line) and the rule.
"""

from __future__ import annotations

import re

from scbundle.core.errors import UnsafeNameError

LABEL_RULE = "1-64 characters of letters, digits and _ . + - (not starting with . or -)"
STAGE_RULE = "a plain identifier: 1-32 letters, digits or _, starting with a letter"
JOB_NAME_RULE = "1-128 characters of letters, digits and _ . + -, starting with a letter or digit"

_LABEL = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,63}")
_STAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def shown(value: object, limit: int = 60) -> str:
    """``value`` for a one-line message: repr (control characters escaped), cut at ``limit``."""
    if not isinstance(value, str):
        return repr(value)[:limit]
    text = value
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def is_label(value: object) -> bool:
    return isinstance(value, str) and _LABEL.fullmatch(value) is not None


def is_stage_name(value: object) -> bool:
    return isinstance(value, str) and _STAGE.fullmatch(value) is not None


def check_label(value: object) -> str:
    if not is_label(value):
        raise UnsafeNameError(f"label {shown(value)} is refused: a label is {LABEL_RULE}; it names directories here and on the site")
    return value  # type: ignore[return-value]


def check_stage_name(value: object) -> str:
    if not is_stage_name(value):
        raise UnsafeNameError(f"stage name {shown(value)} is refused: a stage name is {STAGE_RULE}; it becomes part of job names and paths")
    return value  # type: ignore[return-value]


def check_job_name(value: object) -> str:
    if not (isinstance(value, str) and _JOB_NAME.fullmatch(value)):
        raise UnsafeNameError(f"job name {shown(value)} is refused: a job name is {JOB_NAME_RULE}; it goes in #SBATCH/#MSUB lines and file names")
    return value


def check_run_names(remote_id: int, label: object, stage: object) -> None:
    """A run's label and stage, checked again before any path is built from them: a run made
    by an older scbundle may hold anything. Refused with the way out."""
    if is_label(label) and is_stage_name(stage):
        return
    what = f"label {shown(label)}" if not is_label(label) else f"stage name {shown(stage)}"
    rule = LABEL_RULE if not is_label(label) else STAGE_RULE
    raise UnsafeNameError(
        f"remote_id {remote_id}: its {what} cannot be part of a path (it must be {rule}); nothing was written for it. "
        f"Retire the run (`scbundle retire --remote-id {remote_id}`) and define its work again under a valid label",
        remote_id=remote_id,
    )
