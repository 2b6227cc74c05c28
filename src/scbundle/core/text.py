"""Text from the site made safe to print on a person's terminal.

A job state word, a scheduler's message, a command's stderr, a component's error, a host name:
the site (or anyone who can write to it) chooses these bytes, and a terminal obeys the control
sequences among them: an OSC sequence retitles the window or plants an OSC 8 hyperlink, a CSI
sequence clears the screen or moves the cursor to overwrite what scbundle printed. ``printable``
drops every escape sequence whole (its parameters too), then every other control character:
C0 (but newline and tab where a block of lines is meant), DEL and C1.
"""

from __future__ import annotations

import re

# ECMA-48: ESC (or its 8-bit C1 form) starts a sequence; the sequence is removed with its payload.
_SEQUENCES = re.compile(
    r"""
      (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])   # OSC, DCS, SOS, PM, APC: a string up to ST or BEL
        [^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?   #   (an unterminated one runs to the next ESC or the end)
    | (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?   # CSI: parameters, intermediates, final byte
    | \x1b[\x20-\x2f]*[\x30-\x7e]?              # any other escape: intermediates and a final byte
    """,
    re.VERBOSE,
)
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # every C0 (newline and tab too), DEL, C1
_CONTROL_BLOCK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # the same, newline and tab kept
_LINE_BREAKS = re.compile(r"[\r\n\t]+")


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` without escape sequences and control characters. Pure.

    One line (the default): line breaks and tabs become one space each run. ``multiline``:
    newlines and tabs stay, carriage returns go (a ``\\r`` would let text overwrite its line).
    """
    text = text if isinstance(text, str) else str(text)
    if not _CONTROL_LINE.search(text):  # the common case: nothing to do
        return text
    text = _SEQUENCES.sub("", text)
    if multiline:
        return _CONTROL_BLOCK.sub("", text)
    return _CONTROL_LINE.sub("", _LINE_BREAKS.sub(" ", text))


def printable_opt(text: str | None, *, multiline: bool = False) -> str | None:
    """``printable`` for a value that may be None (a column that may be empty)."""
    return None if text is None else printable(text, multiline=multiline)


def printable_data(value: object) -> object:
    """Every string inside a JSON-able value (dicts, lists) made printable, newlines kept: what
    ``--json`` hands to a consumer that may print it."""
    if isinstance(value, str):
        return printable(value, multiline=True)
    if isinstance(value, dict):
        return {printable_data(k) if isinstance(k, str) else k: printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_data(v) for v in value]
    return value
