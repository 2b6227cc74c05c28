"""The stages scbundle knows, by name."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import Stage
from .chip import ChipStage

STAGES: dict[str, type[Stage]] = {"chip": ChipStage}


def get_stage(name: str, config: Config) -> Stage:
    try:
        cls = STAGES[name]
    except KeyError:
        raise ConfigError(f"no stage named {name!r} (stages: {', '.join(sorted(STAGES))})") from None
    stage = cls()
    settings = config.stage_settings(name)
    if settings.threads is not None:
        stage.threads = settings.threads
    if settings.cost_seconds is not None:
        stage.cost_seconds = settings.cost_seconds
    return stage
