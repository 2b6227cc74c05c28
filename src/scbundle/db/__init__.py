"""The local database: typed models, one session wrapper, Alembic migrations."""

from .models import Base, ChipResult, Detrend, Exposure, Imfile, RemoteComponent, RemoteRun
from .session import Database

__all__ = ["Base", "ChipResult", "Database", "Detrend", "Exposure", "Imfile", "RemoteComponent", "RemoteRun"]
