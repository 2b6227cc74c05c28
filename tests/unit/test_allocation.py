import pytest

from scbundle.bundle.allocation import resource_request
from scbundle.core.errors import ConfigError


def test_seed_figures_37200_commands():
    # the field notes: 37,200 ppImage, 2 threads, 150 s, 24 cores, fill 0.8, 1000 nodes -> 1 h, 162 nodes
    r = resource_request(37200, threads=2, cost_seconds=150, cores_per_node=24, fill_factor=0.8, max_nodes=1000)
    assert (r.hours, r.nodes) == (1, 162)
    assert r.nranks == 162 * 12
    assert r.walltime == "1:00:00"


def test_hours_grow_when_max_nodes_caps():
    r = resource_request(37200, threads=2, cost_seconds=150, cores_per_node=24, fill_factor=0.8, max_nodes=100)
    # node_need*cost_h = 3100*150/3600 = 129.17 node-hours; /(0.8*100) = 1.6 -> 2 h
    assert r.hours == 2
    assert r.nodes == int(3100 * 150 / 3600 / (0.8 * 2)) + 1 == 81
    assert r.nodes <= 100


def test_small_bundle_uses_no_more_ranks_than_commands():
    r = resource_request(3, threads=1, cost_seconds=1, cores_per_node=24, fill_factor=0.8, max_nodes=10)
    assert r.nranks == 3 and r.nodes == 1


def test_over_walltime_is_refused_with_advice():
    with pytest.raises(ConfigError, match="--limit"):
        resource_request(37200, threads=2, cost_seconds=150, cores_per_node=24, fill_factor=0.8, max_nodes=1,
                         max_walltime_seconds=12 * 3600)


def test_threads_wider_than_a_node_refused():
    with pytest.raises(ConfigError, match="do not fit"):
        resource_request(10, threads=32, cost_seconds=1, cores_per_node=24, fill_factor=0.8, max_nodes=1)
