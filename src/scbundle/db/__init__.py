"""The local database: typed models, one session wrapper, Alembic migrations."""

from scbundle.db.models import (
    Base,
    ChipResult,
    Detrend,
    Exposure,
    Imfile,
    RemoteComponent,
    RemoteRun,
)
from scbundle.db.session import Database

__all__ = ["Base", "ChipResult", "Database", "Detrend", "Exposure", "Imfile", "RemoteComponent", "RemoteRun"]
