"""No secret reaches a message, a log or a page: a database URL's password, a value under a key
that names a secret. Pure functions; every error that quotes a value from the configuration
quotes it through ``shown``."""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

HIDDEN = "***"  # what SQLAlchemy's render_as_string(hide_password=True) puts in a password's place

_SECRET_KEY = re.compile(r"pass|secret|token|credential|private|auth", re.IGNORECASE)
# scheme://user:password@host... : everything from the first ':' after the user to the last '@'
# before the path (a password may hold '@' and ':' that the URL's author did not escape)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^/\s]*)@")


def hide_password(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``. A text that is one URL
    SQLAlchemy can parse is rendered by it (``render_as_string(hide_password=True)``); then
    every ``scheme://user:...@`` (a URL among words, one SQLAlchemy refuses) by pattern."""
    if "://" not in text:
        return text
    try:
        url = make_url(text)
    except (ArgumentError, ValueError, TypeError):
        url = None
    if url is not None and url.password is not None:
        text = url.render_as_string(hide_password=True)
    # and by pattern, also after SQLAlchemy: it reads "u:p@ss@host" as password "p", host "ss@host"
    return _URL_PASSWORD.sub(lambda m: m.group("head") + HIDDEN + "@", text)


def looks_secret(key: str) -> bool:
    """A configuration key whose value is a secret by its name (password, token, ...)."""
    return bool(_SECRET_KEY.search(key))


def shown(key: str | None, value: object) -> str | None:
    """How an error may quote ``value`` (found under ``key``): never a table or a list (a
    model-level error's input is the whole configuration), never the value of a secret-looking
    key, never a URL's password. None: say nothing about the value."""
    if isinstance(value, dict | list | tuple | set):
        return None
    if key is not None and looks_secret(key):
        return HIDDEN
    return repr(hide_password(value)) if isinstance(value, str) else repr(value)
