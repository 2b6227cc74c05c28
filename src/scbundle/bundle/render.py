"""Jinja2 for every generated script and config: StrictUndefined, explicit quoting filters."""

from __future__ import annotations

import shlex
from functools import cache

import jinja2

from scbundle.bundle.multiprog import srun_quote
from scbundle.core.resources import templates_dir


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
    return env


def render(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
