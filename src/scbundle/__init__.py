"""scbundle: run a pipeline stage's biggest batches on a remote supercomputer."""

__version__ = "0.1.0"

import logging as _logging

_logging.getLogger("scbundle").addHandler(_logging.NullHandler())  # a command prints its own lines; the daemon logs
