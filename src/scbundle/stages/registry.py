"""The stages scbundle knows, by name: the entry points of the group ``scbundle.stages``.

scbundle registers its own four (chip, cam, warp, stack) in its pyproject.toml; a third party
adds a stage by shipping a distribution with an entry point in the same group (see
docs/stage-plugins.md), without touching scbundle. Names are read from the installed
distributions' metadata; a stage's module is imported only when the stage is used, so a
broken plugin breaks only the commands that use it, with a message naming it. A stage name
becomes part of job names and paths on the site, so it must be a plain identifier
(core/names.py): a plugin registering any other name is refused, by name and distribution,
and its stage is never listed.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from scbundle.core.config import Config, StageSettings, format_validation
from scbundle.core.errors import ConfigError
from scbundle.core.names import STAGE_RULE, check_stage_name, is_stage_name, shown
from scbundle.stages.base import PluginSettings, Stage

GROUP = "scbundle.stages"

#: scbundle's own stages: what its entry points say, also used when scbundle runs from a
#: source tree without installed metadata
BUILTIN: dict[str, str] = {
    "chip": "scbundle.stages.chip:ChipStage",
    "cam": "scbundle.stages.cam:CamStage",
    "warp": "scbundle.stages.warp:WarpStage",
    "stack": "scbundle.stages.stack:StackStage",
    "commands": "scbundle.stages.commands:CommandsStage",
}


@dataclass(frozen=True)
class StageEntry:
    name: str
    value: str  # "module:Class"
    dist: str  # the distribution that registers it

    def describe(self) -> str:
        return f"{self.value} from {self.dist}"


class StageRegistry(Mapping[str, type[Stage]]):
    """Stage name -> Stage class, found through entry points (read once per process)."""

    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self._entries: dict[str, list[StageEntry]] | None = None
        self._refused: dict[str, list[StageEntry]] = {}  # names that are no plain identifier
        self._classes: dict[str, type[Stage]] = {}

    def refresh(self) -> None:
        """Forget what was found (after installing a plugin into a running process)."""
        self._entries, self._refused, self._classes = None, {}, {}

    def use(self, name: str, factory: Callable[[], Stage]) -> None:
        """Answer ``name`` with ``factory()`` in this process (benches and tests: a stage
        variant, or a stage defined in the test itself)."""
        check_stage_name(name)
        self.entries()[name] = [StageEntry(name, f"{factory!r}", "this process")]
        self._classes[name] = factory  # type: ignore[assignment]

    def entries(self) -> dict[str, list[StageEntry]]:
        if self._entries is None:
            found: dict[str, list[StageEntry]] = {n: [StageEntry(n, v, "scbundle")] for n, v in BUILTIN.items()}
            for ep in md.entry_points(group=self.group):
                dist = ep.dist.name if ep.dist is not None else "an unnamed distribution"
                if not is_stage_name(ep.name):  # never listed, never a job name or a path
                    self._refused.setdefault(ep.name, []).append(StageEntry(ep.name, ep.value, dist))
                    continue
                same = found.setdefault(ep.name, [])
                if not any(e.value == ep.value for e in same):
                    same.append(StageEntry(ep.name, ep.value, dist))
            self._entries = found
        return self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries()))

    def __len__(self) -> int:
        return len(self.entries())

    def __contains__(self, name: object) -> bool:
        return name in self.entries()

    def __getitem__(self, name: str) -> type[Stage]:
        if name in self._classes:
            return self._classes[name]
        candidates = self.entries().get(name)
        if not candidates and name in self._refused:
            plugins = "; ".join(e.describe() for e in self._refused[name])
            raise ConfigError(f"stage {shown(name)} ({plugins}) is refused: a stage name must be {STAGE_RULE}, since it becomes part of job names and paths")
        if not candidates:
            raise KeyError(name)
        if len(candidates) > 1:
            raise ConfigError(
                f"stage {name!r} is registered more than once ({'; '.join(e.describe() for e in candidates)}): "
                f"uninstall one of the distributions"
            )
        entry = candidates[0]
        try:
            obj = md.EntryPoint(entry.name, entry.value, self.group).load()
        except Exception as err:  # a plugin's import error, of any kind
            raise ConfigError(f"stage {name!r} ({entry.describe()}) cannot be loaded: {type(err).__name__}: {err}") from err
        if not (isinstance(obj, type) and issubclass(obj, Stage)):
            raise ConfigError(f"stage {name!r} ({entry.describe()}) is not a subclass of scbundle.stages.base.Stage: {obj!r}")
        if getattr(obj, "name", None) != name:
            raise ConfigError(f"stage {name!r} ({entry.describe()}) calls itself {getattr(obj, 'name', None)!r}: the names must match")
        self._classes[name] = obj
        return obj


STAGES = StageRegistry()


def _unknown(name: str) -> ConfigError:
    return ConfigError(f"no stage named {name!r} (stages: {', '.join(STAGES)})")


def get_stage(name: str, config: Config) -> Stage:
    try:
        cls = STAGES[name]
    except KeyError:
        raise _unknown(name) from None
    try:
        stage = cls()
    except Exception as err:
        raise ConfigError(f"stage {name!r} cannot be created ({cls.__module__}.{cls.__qualname__}()): {type(err).__name__}: {err}") from err
    settings = config.stage_settings(name)
    if settings.threads is not None:
        stage.threads = settings.threads
    if settings.cost_seconds is not None:
        stage.cost_seconds = settings.cost_seconds
    if settings.fault_map is not None:
        stage.fault_map = {int(code): fault for code, fault in settings.fault_map.items()}
    if settings.retry_faults is not None:
        stage.retry_faults = frozenset(settings.retry_faults)
    if stage.settings_model is not None:
        stage.settings = _own_settings(name, stage.settings_model, settings, config.source)
    if settings.max_product_bytes is not None:
        stage.max_product_bytes = settings.max_product_bytes
    return stage


def _own_settings(name: str, model: type[PluginSettings], settings: StageSettings, source: str) -> PluginSettings:
    try:
        return model.model_validate(settings.model_extra or {})
    except ValidationError as err:
        raise ConfigError(f"config {source}: {format_validation(err, prefix=f'stages.{name}')}") from None


def next_stage_of(name: str, config: Config) -> str | None:
    """The stage advance queues after ``name``: the config's [stages.NAME] next_stage if set
    ("" ends the pipeline there), else the stage's own ``next_stage``."""
    configured = config.stage_settings(name).next_stage
    if configured is not None:
        nxt = configured or None
    else:
        try:
            nxt = STAGES[name].next_stage
        except KeyError:
            raise _unknown(name) from None
    if nxt is not None and nxt not in STAGES:
        raise ConfigError(f"stage {name!r} is followed by {nxt!r}, which is no stage (stages: {', '.join(STAGES)})")
    return nxt


def check_config(config: Config) -> Config:
    """The config's [stages.NAME] tables name installed stages, and next_stage names one too."""
    unknown = sorted(set(config.stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"config {config.source}: unknown stage(s) {unknown} under [stages] (known: {sorted(STAGES)})")
    for name, settings in config.stages.items():
        extra = settings.model_extra or {}
        if extra:
            model = STAGES[name].settings_model
            if model is None:
                keys = "; ".join(f"unknown key {'stages.' + name + '.' + k!r}" for k in sorted(extra))
                raise ConfigError(f"config {config.source}: {keys} (stage {name!r} has no settings of its own)")
            _own_settings(name, model, settings, config.source)
        if settings.next_stage and settings.next_stage not in STAGES:
            raise ConfigError(f"config {config.source}: stages.{name}.next_stage {settings.next_stage!r} is no stage (known: {sorted(STAGES)})")
    return config


def pipeline(config: Config, first: str = "chip") -> list[str]:
    """The stages from ``first`` on, following next_stage (stops at a repeat)."""
    out = [first]
    while (nxt := next_stage_of(out[-1], config)) is not None and nxt not in out:
        out.append(nxt)
    return out
