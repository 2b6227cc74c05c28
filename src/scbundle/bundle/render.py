"""Jinja2 for every generated script and config: StrictUndefined, explicit quoting filters.

Every value a template places is quoted for where it goes: a shell word (``shq``), a word of
an srun --multi-prog line (``srq``), or a #SBATCH / #MSUB directive value (``directive``;
``directive_path`` for a path there). sbatch and msub do not parse directives as a shell
does (sbatch's own rules: quotes group, a backslash escapes, an unquoted # starts a comment,
% starts a filename pattern), so a directive value is checked against a plain charset and
refused otherwise, never escaped.
"""

from __future__ import annotations

import re
import shlex
from functools import cache

import jinja2

from scbundle.bundle.multiprog import srun_quote
from scbundle.core.errors import BundleError
from scbundle.core.resources import templates_dir

_DIRECTIVE = re.compile(r"[A-Za-z0-9_.,+@/:][A-Za-z0-9_.,+@/:-]*")
_NOT_IN_DIRECTIVE_PATH = re.compile(r"[\\\"'%#\x00-\x1f\x7f]")


def directive(value: object) -> str:
    """A #SBATCH / #MSUB value (job name, account, partition; a comment's name): letters,
    digits and _ . , + @ / : - only (not starting with -), else BundleError."""
    text = str(value)
    if not _DIRECTIVE.fullmatch(text):
        raise BundleError(
            f"{text[:80]!r}{'...' if len(text) > 80 else ''} cannot go in a job script's directive or comment line: "
            "only letters, digits and _ . , + @ / : - are allowed there (not a leading -)"
        )
    return text


def directive_path(value: object) -> str:
    """A path as a #SBATCH / #MSUB value: single-quoted when it holds a space; refused when it
    holds a quote, backslash, %, # or a control character (sbatch would read those itself)."""
    text = str(value)
    if _NOT_IN_DIRECTIVE_PATH.search(text):
        raise BundleError(f"path {text[:200]!r} cannot go in a job script's directive line: it holds a quote, backslash, %, # or control character")
    return shlex.quote(text)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["shq"] = lambda v: shlex.quote(str(v))  # POSIX shell word
    env.filters["srq"] = lambda v: srun_quote(str(v))  # srun --multi-prog word
    env.filters["directive"] = directive  # #SBATCH / #MSUB value, checked
    env.filters["directive_path"] = directive_path
    return env


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
