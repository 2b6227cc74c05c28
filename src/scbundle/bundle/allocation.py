"""The resource request: how many nodes for how long (the field notes' formula)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scbundle.core.errors import BundleError, ConfigError


@dataclass(frozen=True)
class ResourceRequest:
    hours: int
    nodes: int
    nranks: int  # concurrent commands: nodes * cores_per_node // threads
    threads: int

    @property
    def walltime(self) -> str:
        return f"{self.hours}:00:00"

    @property
    def seconds(self) -> int:
        return self.hours * 3600


def resource_request(
    n_commands: int,
    *,
    threads: int,
    cost_seconds: float,
    cores_per_node: int,
    fill_factor: float,
    max_nodes: int,
    max_walltime_seconds: int | None = None,
) -> ResourceRequest:
    """Whole hours and whole nodes for ``n_commands`` of ``cost_seconds`` each.

    core_need = N * threads;  node_need = core_need / cores_per_node
    hours = int(node_need * cost_h / (fill * max_nodes)) + 1
    nodes = int(node_need * cost_h / (fill * hours)) + 1
    """
    if n_commands <= 0:
        raise BundleError("a bundle needs at least one command")
    if threads > cores_per_node:
        raise ConfigError(f"{threads} threads per command do not fit a {cores_per_node}-core node")
    node_need = n_commands * threads / cores_per_node
    cost_h = cost_seconds / 3600.0
    hours = int(node_need * cost_h / (fill_factor * max_nodes)) + 1
    nodes = min(max_nodes, int(node_need * cost_h / (fill_factor * hours)) + 1)
    if max_walltime_seconds is not None and hours * 3600 > max_walltime_seconds:
        raise ConfigError(
            f"{n_commands} commands of {cost_seconds:g} s need {hours} h on {max_nodes} nodes, "
            f"over the site's max walltime of {max_walltime_seconds / 3600:g} h: define smaller runs (--limit)"
        )
    ranks_per_node = cores_per_node // threads
    nranks = max(1, min(nodes * ranks_per_node, n_commands))
    return ResourceRequest(hours=hours, nodes=math.ceil(nranks / ranks_per_node), nranks=nranks, threads=threads)
