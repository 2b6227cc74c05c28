"""Text that came from elsewhere (the site, a program's stderr) made safe to show a person."""

from __future__ import annotations

import re

# ESC-started sequences (CSI, OSC ... BEL/ST, two-character escapes), then any C0/C1 control
# character and DEL left over; tab and newline are kept only where asked
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` without terminal escape sequences or control characters (a title change, a
    clear screen, a hyperlink from a compromised site never reach the terminal); tabs and
    newlines become spaces unless ``multiline``."""
    s = _ESCAPES.sub("", str(text))
    if multiline:
        return _CONTROLS.sub("", s)
    return _CONTROLS_ONE_LINE.sub(" ", s.replace("\r\n", "\n"))
