"""Pipeline stages: the public stage API (``scbundle.stages.base``) and the registry of
installed stages (``scbundle.stages.registry``)."""
