"""The local <-> remote protocol (file names, record fields, limits, fault codes, atomic
write): remote/sc_protocol.py, the very file shipped to the site and imported by its tools,
loaded here from the installation's remote/ directory, so both sides read one source.

    from scbundle.core.protocol import PROTOCOL as P
    P.COMPONENTS_TSV, P.RESULT_FIELDS, P.MAX_CONFIG_BYTES, P.DEFAULT_FAULT_MAP, ...
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from scbundle.core.resources import remote_dir

_NAME = "scbundle_remote_sc_protocol"


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, remote_dir() / "sc_protocol.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = mod
    spec.loader.exec_module(mod)
    return mod


PROTOCOL: ModuleType = _load()
