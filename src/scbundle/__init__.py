"""scbundle: run a pipeline stage's biggest batches on a remote supercomputer."""

__version__ = "0.1.0"
