"""read_topology on the recorded trees, degraded trees, and the live machine; usable_cpus for real."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ds_helper.rank.bind.cpuset import format_cpus, parse_cpus
from ds_helper.rank.bind.topology import Topology, read_topology, usable_cpus
from ds_helper.rank.errors import LaunchError

DATA = Path(__file__).parent / "data" / "topology"


def load(name: str) -> Topology:
    return read_topology(DATA / name)


def node_cpus(t: Topology) -> dict[int, str]:
    return {n.id: format_cpus(n.cpus) for n in t.nodes.values()}


def test_xeon_2s_ht() -> None:
    t = load("xeon-2s-ht")
    assert t.cpus == tuple(range(112))
    assert node_cpus(t) == {0: "0-27,56-83", 1: "28-55,84-111"}
    assert t.siblings[0] == (0, 56) and t.siblings[56] == (0, 56) and t.siblings[55] == (55, 111)
    assert t.package[27] == 0 and t.package[28] == 1 and t.package[84] == 1
    assert dict(t.nodes[0].distance) == {0: 10, 1: 21}
    assert t.memory_only_nodes == ()
    assert [t.near_memory_node(n) for n in (0, 1)] == [None, None]
    assert t.node_of(83) == 0 and t.node_of(84) == 1 and t.node_of(500) is None
    assert t.numa_from_sysfs


def test_xeon_snc2() -> None:
    t = load("xeon-2s-ht-snc2")
    assert node_cpus(t) == {
        0: "0-13,56-69",
        1: "14-27,70-83",
        2: "28-41,84-97",
        3: "42-55,98-111",
    }
    assert dict(t.nodes[1].distance) == {0: 11, 1: 10, 2: 21, 3: 21}
    assert [n.id for n in t.cpu_nodes] == [0, 1, 2, 3]


def test_xeon_max_flat_hbm() -> None:
    t = load("xeon-max-9480-flat")
    assert t.cpus == tuple(range(224))
    assert node_cpus(t) == {0: "0-55,112-167", 1: "56-111,168-223", 2: "", 3: ""}
    assert [n.id for n in t.cpu_nodes] == [0, 1]
    assert [n.id for n in t.memory_only_nodes] == [2, 3]
    assert t.nodes[2].memory_only and not t.nodes[0].memory_only
    assert t.siblings[5] == (5, 117)
    # the HBM of each socket is the near memory of that socket's CPU node, never the other socket's
    assert t.near_memory_node(0) == 2
    assert t.near_memory_node(1) == 3


def test_epyc_nps4() -> None:
    t = load("epyc-nps4")
    assert t.cpus == tuple(range(128))
    assert node_cpus(t) == {
        0: "0-15,64-79",
        1: "16-31,80-95",
        2: "32-47,96-111",
        3: "48-63,112-127",
    }
    assert set(t.package.values()) == {0}
    assert t.siblings[16] == (16, 80)


def test_this_vm_recorded() -> None:
    t = load("this-vm")
    assert t.cpus == (0, 1)
    assert node_cpus(t) == {0: "0-1"}
    assert t.siblings == {0: (0,), 1: (1,)}
    assert dict(t.nodes[0].distance) == {0: 10}


def copy_tree(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest)
    return dest


def test_no_node_directory_means_one_node(tmp_path: Path) -> None:
    root = copy_tree("xeon-2s-ht", tmp_path)
    shutil.rmtree(root / "sys/devices/system/node")
    t = read_topology(root)
    assert not t.numa_from_sysfs
    assert list(t.nodes) == [0]
    assert t.nodes[0].cpus == tuple(range(112))
    assert t.nodes[0].has_memory


def test_missing_per_cpu_files_degrade(tmp_path: Path) -> None:
    root = copy_tree("this-vm", tmp_path)
    (root / "sys/devices/system/cpu/cpu1/topology/thread_siblings_list").unlink()
    (root / "sys/devices/system/cpu/cpu1/topology/physical_package_id").unlink()
    (root / "sys/devices/system/node/node0/distance").write_text("garbage\n")
    t = read_topology(root)
    assert t.siblings[1] == (1,)
    assert t.package[1] == 0
    assert dict(t.nodes[0].distance) == {}


def test_offline_sibling_dropped(tmp_path: Path) -> None:
    root = copy_tree("xeon-2s-ht", tmp_path)
    (root / "sys/devices/system/cpu/online").write_text("0-55\n")  # SMT switched off
    t = read_topology(root)
    assert t.cpus == tuple(range(56))
    assert t.siblings[3] == (3,)
    assert t.nodes[0].cpus == tuple(range(28))


def test_missing_online_file_scans_cpu_dirs(tmp_path: Path) -> None:
    root = copy_tree("this-vm", tmp_path)
    (root / "sys/devices/system/cpu/online").unlink()
    (root / "sys/devices/system/node/online").unlink()
    t = read_topology(root)
    assert t.cpus == (0, 1)
    assert list(t.nodes) == [0]


def test_missing_cpu_list_is_launch_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="cannot read the CPU list"):
        read_topology(tmp_path)


def test_corrupt_cpulist_names_the_file(tmp_path: Path) -> None:
    root = copy_tree("this-vm", tmp_path)
    (root / "sys/devices/system/node/node0/cpulist").write_text("1-0\n")
    with pytest.raises(LaunchError, match=r"node0/cpulist: reversed range '1-0'"):
        read_topology(root)


def test_cxl_like_far_memory_node_is_not_hbm(tmp_path: Path) -> None:
    root = copy_tree("xeon-max-9480-flat", tmp_path)
    node = root / "sys/devices/system/node"
    # Make the memory-only nodes far (as a CXL expander would be): not near memory any more.
    (node / "node0/distance").write_text("10 21 24 26\n")
    (node / "node1/distance").write_text("21 10 26 24\n")
    t = read_topology(root)
    assert t.near_memory_node(0) is None and t.near_memory_node(1) is None


# ------------------------------------------------------------------------------------------- live machine


def test_live_topology_matches_proc() -> None:
    t = read_topology("/")
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    assert t.cpus == parse_cpus(online)
    assert set(t.siblings) == set(t.cpus)
    assert {c for n in t.nodes.values() for c in n.cpus} <= set(t.cpus)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_usable_cpus_is_the_affinity_mask() -> None:
    assert usable_cpus() == tuple(sorted(os.sched_getaffinity(0)))
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    assert usable_cpus() == parse_cpus(line.split(":", 1)[1].strip())


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_usable_cpus_follows_a_narrowed_mask() -> None:
    before = os.sched_getaffinity(0)
    one = min(before)
    try:
        os.sched_setaffinity(0, {one})
        assert usable_cpus() == (one,)
    finally:
        os.sched_setaffinity(0, before)
    assert set(usable_cpus()) == before
