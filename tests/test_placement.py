"""Placement policies: explicit expected layouts on every recorded machine, every error, env handling."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import bind_record
from ds_helper.rank import bind
from ds_helper.rank.bind.cpuset import format_cpus
from ds_helper.rank.bind.placement import Placement, format_layout_table, layout
from ds_helper.rank.bind.topology import Topology, read_topology, usable_cpus
from ds_helper.rank.errors import LaunchError
from hypothesis import given, settings
from hypothesis import strategies as st

DATA = Path(__file__).parent / "data" / "topology"
MACHINES = (
    "xeon-2s-ht",
    "xeon-2s-ht-snc2",
    "xeon-max-9480-flat",
    "epyc-nps4",
    "this-vm",
)
_TOPOS: dict[str, Topology] = {}


def topo(name: str) -> Topology:
    if name not in _TOPOS:
        _TOPOS[name] = read_topology(DATA / name)
    return _TOPOS[name]


def rows(
    name: str,
    lws: int,
    env: dict[str, str] | None = None,
    usable: Any = None,
    **spec: Any,
) -> list[tuple[str, str, str]]:
    """Layout as (cores, memory, OMP_NUM_THREADS) per local rank, in the dry-run table's spelling."""
    t = topo(name)
    placements = layout(
        bind_record(**spec),
        local_world_size=lws,
        topology=t,
        usable=t.cpus if usable is None else usable,
        env=env or {},
    )
    out = []
    for p in placements:
        cores = "-" if p.cpus is None else format_cpus(p.cpus)
        mem = "-" if p.mem_policy is None else f"{p.mem_policy} {format_cpus(p.mem_nodes)}"
        out.append((cores, mem, p.env.get("OMP_NUM_THREADS", "-")))
    return out


def lay(name: str, lws: int, env: dict[str, str] | None = None, **spec: Any) -> list[Placement]:
    t = topo(name)
    return layout(bind_record(**spec), local_world_size=lws, topology=t, usable=t.cpus, env=env or {})


# ------------------------------------------------------------------------------- expected layouts: 'cores'

EXPECTED_CORES = [
    # 2x Xeon 8280, HT (siblings n, n+56): each rank gets whole cores, both threads, one socket each.
    ("xeon-2s-ht", 1, {}, [("0-111", "-", "112")]),
    (
        "xeon-2s-ht",
        2,
        {},
        [("0-27,56-83", "bind 0", "56"), ("28-55,84-111", "bind 1", "56")],
    ),
    (
        "xeon-2s-ht",
        4,
        {},
        [
            ("0-13,56-69", "bind 0", "28"),
            ("14-27,70-83", "bind 0", "28"),
            ("28-41,84-97", "bind 1", "28"),
            ("42-55,98-111", "bind 1", "28"),
        ],
    ),
    # 56 cores / 3 ranks: 18 cores each, cores 54-55 (and their siblings) unused; rank 1 straddles sockets.
    (
        "xeon-2s-ht",
        3,
        {},
        [
            ("0-17,56-73", "bind 0", "36"),
            ("18-35,74-91", "-", "36"),
            ("36-53,92-109", "bind 1", "36"),
        ],
    ),
    (
        "xeon-2s-ht",
        3,
        {"remainder": "spread"},
        [
            ("0-18,56-74", "bind 0", "38"),
            ("19-37,75-93", "-", "38"),
            ("38-55,94-111", "bind 1", "36"),
        ],
    ),
    (
        "xeon-2s-ht",
        2,
        {"physical": True},
        [("0-27", "bind 0", "28"), ("28-55", "bind 1", "28")],
    ),
    # Half of each socket, first threads only: 28 cores, 7 per rank, contiguous within a socket.
    (
        "xeon-2s-ht",
        4,
        {"cores": "0-13,28-41"},
        [
            ("0-6", "bind 0", "7"),
            ("7-13", "bind 0", "7"),
            ("28-34", "bind 1", "7"),
            ("35-41", "bind 1", "7"),
        ],
    ),
    # A core list naming both threads of cores 0-3: DeepSpeed gave rank 0 = 0-3 and rank 1 = 56-59, i.e. the
    # two threads of the same four cores. Here each rank gets two whole cores.
    (
        "xeon-2s-ht",
        2,
        {"cores": ["0-3", "56-59"]},
        [("0-1,56-57", "bind 0", "4"), ("2-3,58-59", "bind 0", "4")],
    ),
    (
        "xeon-2s-ht",
        2,
        {"cores": [0, 2, 4, 6]},
        [("0,2", "bind 0", "2"), ("4,6", "bind 0", "2")],
    ),
    (
        "xeon-2s-ht",
        2,
        {"cores": "0-55:2", "memory": "none"},
        [("0-26:2", "-", "14"), ("28-54:2", "-", "14")],
    ),
    # SNC2: whole-socket slices span two sub-NUMA nodes -> auto leaves memory alone; 'local' binds both.
    (
        "xeon-2s-ht-snc2",
        2,
        {},
        [("0-27,56-83", "-", "56"), ("28-55,84-111", "-", "56")],
    ),
    (
        "xeon-2s-ht-snc2",
        2,
        {"memory": "local"},
        [("0-27,56-83", "bind 0-1", "56"), ("28-55,84-111", "bind 2-3", "56")],
    ),
    (
        "xeon-2s-ht-snc2",
        4,
        {},
        [
            ("0-13,56-69", "bind 0", "28"),
            ("14-27,70-83", "bind 1", "28"),
            ("28-41,84-97", "bind 2", "28"),
            ("42-55,98-111", "bind 3", "28"),
        ],
    ),
    # Xeon Max flat: a rank inside one socket prefers that socket's HBM node (2 or 3).
    (
        "xeon-max-9480-flat",
        2,
        {},
        [
            ("0-55,112-167", "preferred 2", "112"),
            ("56-111,168-223", "preferred 3", "112"),
        ],
    ),
    (
        "xeon-max-9480-flat",
        2,
        {"memory": "local"},
        [("0-55,112-167", "bind 0", "112"), ("56-111,168-223", "bind 1", "112")],
    ),
    (
        "xeon-max-9480-flat",
        2,
        {"memory": "none", "physical": True},
        [("0-55", "-", "56"), ("56-111", "-", "56")],
    ),
    (
        "epyc-nps4",
        4,
        {},
        [
            ("0-15,64-79", "bind 0", "32"),
            ("16-31,80-95", "bind 1", "32"),
            ("32-47,96-111", "bind 2", "32"),
            ("48-63,112-127", "bind 3", "32"),
        ],
    ),
    ("epyc-nps4", 2, {"physical": True}, [("0-31", "-", "32"), ("32-63", "-", "32")]),
    # This VM: 2 CPUs, 1 node: nothing to choose for memory.
    ("this-vm", 1, {}, [("0-1", "-", "2")]),
    ("this-vm", 2, {}, [("0", "-", "1"), ("1", "-", "1")]),
    ("this-vm", 2, {"memory": "local"}, [("0", "bind 0", "1"), ("1", "bind 0", "1")]),
]


def _canon(expected: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Let expectations use any parse_cpus spelling (e.g. strides) for readability."""
    from ds_helper.rank.bind.cpuset import parse_cpus

    return [(c if c == "-" else format_cpus(parse_cpus(c)), m, t) for c, m, t in expected]


@pytest.mark.parametrize(("name", "lws", "spec", "expected"), EXPECTED_CORES)
def test_cores_layouts(name: str, lws: int, spec: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert rows(name, lws, policy="cores", **spec) == _canon(expected)


# -------------------------------------------------------------------------------- expected layouts: 'numa'

EXPECTED_NUMA = [
    (
        "xeon-2s-ht",
        2,
        {},
        [("0-27,56-83", "bind 0", "56"), ("28-55,84-111", "bind 1", "56")],
    ),
    (
        "xeon-2s-ht",
        4,
        {},
        [
            ("0-13,56-69", "bind 0", "28"),
            ("14-27,70-83", "bind 0", "28"),
            ("28-41,84-97", "bind 1", "28"),
            ("42-55,98-111", "bind 1", "28"),
        ],
    ),
    # 3 ranks on 2 nodes: node 0 takes ranks 0-1, node 1 rank 2.
    (
        "xeon-2s-ht",
        3,
        {},
        [
            ("0-13,56-69", "bind 0", "28"),
            ("14-27,70-83", "bind 0", "28"),
            ("28-55,84-111", "bind 1", "56"),
        ],
    ),
    # SNC2, fewer ranks than nodes: each rank gets a socket's two sub-NUMA nodes.
    (
        "xeon-2s-ht-snc2",
        2,
        {},
        [("0-27,56-83", "bind 0-1", "56"), ("28-55,84-111", "bind 2-3", "56")],
    ),
    ("xeon-2s-ht-snc2", 1, {}, [("0-111", "bind 0-3", "112")]),
    (
        "xeon-2s-ht-snc2",
        8,
        {},
        [
            ("0-6,56-62", "bind 0", "14"),
            ("7-13,63-69", "bind 0", "14"),
            ("14-20,70-76", "bind 1", "14"),
            ("21-27,77-83", "bind 1", "14"),
            ("28-34,84-90", "bind 2", "14"),
            ("35-41,91-97", "bind 2", "14"),
            ("42-48,98-104", "bind 3", "14"),
            ("49-55,105-111", "bind 3", "14"),
        ],
    ),
    # Xeon Max flat mode: memory preferred on the socket's HBM node (DeepSpeed's -p), CPU nodes only.
    (
        "xeon-max-9480-flat",
        2,
        {},
        [
            ("0-55,112-167", "preferred 2", "112"),
            ("56-111,168-223", "preferred 3", "112"),
        ],
    ),
    (
        "xeon-max-9480-flat",
        4,
        {},
        [
            ("0-27,112-139", "preferred 2", "56"),
            ("28-55,140-167", "preferred 2", "56"),
            ("56-83,168-195", "preferred 3", "56"),
            ("84-111,196-223", "preferred 3", "56"),
        ],
    ),
    (
        "xeon-max-9480-flat",
        2,
        {"memory": "local"},
        [("0-55,112-167", "bind 0", "112"), ("56-111,168-223", "bind 1", "112")],
    ),
    (
        "xeon-max-9480-flat",
        2,
        {"memory": "preferred"},
        [
            ("0-55,112-167", "preferred 2", "112"),
            ("56-111,168-223", "preferred 3", "112"),
        ],
    ),
    ("xeon-max-9480-flat", 1, {}, [("0-223", "preferred 2-3", "224")]),
    # EPYC NPS4
    (
        "epyc-nps4",
        4,
        {},
        [
            ("0-15,64-79", "bind 0", "32"),
            ("16-31,80-95", "bind 1", "32"),
            ("32-47,96-111", "bind 2", "32"),
            ("48-63,112-127", "bind 3", "32"),
        ],
    ),
    (
        "epyc-nps4",
        8,
        {"physical": True},
        [
            ("0-7", "bind 0", "8"),
            ("8-15", "bind 0", "8"),
            ("16-23", "bind 1", "8"),
            ("24-31", "bind 1", "8"),
            ("32-39", "bind 2", "8"),
            ("40-47", "bind 2", "8"),
            ("48-55", "bind 3", "8"),
            ("56-63", "bind 3", "8"),
        ],
    ),
    # 3 ranks, 4 nodes: 'drop' leaves node 3 unused; 'spread' gives rank 0 two nodes.
    (
        "epyc-nps4",
        3,
        {},
        [
            ("0-15,64-79", "bind 0", "32"),
            ("16-31,80-95", "bind 1", "32"),
            ("32-47,96-111", "bind 2", "32"),
        ],
    ),
    (
        "epyc-nps4",
        3,
        {"remainder": "spread"},
        [
            ("0-31,64-95", "bind 0-1", "64"),
            ("32-47,96-111", "bind 2", "32"),
            ("48-63,112-127", "bind 3", "32"),
        ],
    ),
    (
        "epyc-nps4",
        6,
        {"physical": True},
        [
            ("0-7", "bind 0", "8"),
            ("8-15", "bind 0", "8"),
            ("16-23", "bind 1", "8"),
            ("24-31", "bind 1", "8"),
            ("32-47", "bind 2", "16"),
            ("48-63", "bind 3", "16"),
        ],
    ),
    # numa with a core list: only the nodes holding those cores take part.
    (
        "epyc-nps4",
        2,
        {"cores": "16-47"},
        [("16-31", "bind 1", "16"), ("32-47", "bind 2", "16")],
    ),
    ("this-vm", 2, {}, [("0", "-", "1"), ("1", "-", "1")]),
    ("this-vm", 2, {"memory": "local"}, [("0", "bind 0", "1"), ("1", "bind 0", "1")]),
]


@pytest.mark.parametrize(("name", "lws", "spec", "expected"), EXPECTED_NUMA)
def test_numa_layouts(name: str, lws: int, spec: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert rows(name, lws, policy="numa", **spec) == _canon(expected)


def test_policy_none_leaves_everything_alone() -> None:
    for p in lay("xeon-2s-ht", 4):
        assert p.cpus is None and p.mem_policy is None and p.env == {} and p.notes == []
    notes = lay("xeon-2s-ht", 2, cores="0-3")[0].notes
    assert notes == ["bind.cores ignored: bind.policy is none"]


def test_each_rank_keeps_its_own_row_of_the_node_layout() -> None:
    t = topo("xeon-2s-ht-snc2")
    spec = bind_record(policy="numa")
    full = layout(spec, local_world_size=8, topology=t, usable=t.cpus, env={})
    for r in range(8):
        got = bind.for_rank(
            spec,
            local_rank=r,
            local_world_size=8,
            launcher="mpich",
            env={},
            dry_run=False,
            read_machine=lambda: (t, t.cpus),
        )
        assert got.placement == full[r] and got.table == format_layout_table(full)


def test_notes_report_unused_and_span() -> None:
    notes = lay("xeon-2s-ht", 3, policy="cores")[1].notes
    assert "CPUs 54-55,110-111 unused (bind.remainder=drop, bind.physical=False)" in notes
    assert "local rank 1: cores span NUMA nodes 0-1: memory left to the kernel (first touch)" in notes
    assert "NUMA node(s) 3 unused (bind.remainder=drop)" in lay("epyc-nps4", 3, policy="numa")[0].notes
    uneven = lay("epyc-nps4", 6, policy="numa")[0].notes
    assert "6 local ranks on 4 NUMA nodes: the first 2 node(s) get one rank more" in uneven


# ------------------------------------------------------------------------------------- usable-set handling


def test_default_cores_are_the_usable_ones() -> None:
    # e.g. a cgroup giving the job socket 1 only
    got = rows(
        "xeon-2s-ht",
        2,
        usable=tuple(range(28, 56)) + tuple(range(84, 112)),
        policy="cores",
    )
    assert got == [("28-41,84-97", "bind 1", "28"), ("42-55,98-111", "bind 1", "28")]
    notes = lay("xeon-2s-ht", 1, policy="cores")[0].notes
    assert not any("may use" in n for n in notes)
    t = topo("xeon-2s-ht")
    p = layout(bind_record(policy="cores"), local_world_size=1, topology=t, usable=range(8), env={})[0]
    assert "this process may use 8 of 112 online CPUs (0-7); binding stays inside that set" in p.notes


def test_physical_picks_one_usable_thread_per_core() -> None:
    # Only the second hardware threads are usable: physical still gets one thread per core.
    got = rows("xeon-2s-ht", 2, usable=tuple(range(56, 112)), policy="cores", physical=True)
    assert got == [("56-83", "bind 0", "28"), ("84-111", "bind 1", "28")]


def test_requested_cores_not_usable() -> None:
    t = topo("xeon-2s-ht")
    with pytest.raises(LaunchError) as info:
        layout(bind_record(policy="cores", cores="0-7"), local_world_size=1, topology=t, usable=range(4), env={})
    assert str(info.value) == "bind.cores: CPUs 4-7 are not usable by this process (usable: 0-3)"
    with pytest.raises(
        LaunchError,
        match=r"^bind.cores: CPUs 64-79 are not usable by this process \(usable: 0-1\)$",
    ):
        rows("this-vm", 1, policy="cores", cores="0,64-79")


def test_live_machine_layout() -> None:
    t = read_topology("/")
    usable = usable_cpus()
    placements = layout(
        bind_record(policy="cores"),
        local_world_size=len(usable),
        topology=t,
        usable=usable,
        env={},
    )
    assert sorted(c for p in placements for c in p.cpus or ()) == sorted(usable)
    if hasattr(os, "sched_setaffinity"):  # the placement is something the kernel accepts
        before = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, placements[0].cpus or before)
        finally:
            os.sched_setaffinity(0, before)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "lws", "spec", "message"),
    [
        (
            "this-vm",
            4,
            {"policy": "cores"},
            "bind.cores: 2 CPUs (0-1) for 4 local ranks, need at least one each",
        ),
        (
            "this-vm",
            3,
            {"policy": "numa"},
            "bind.policy=numa: node 0: 2 CPUs (0-1) for 3 local ranks, need at least one each",
        ),
        (
            "xeon-2s-ht",
            57,
            {"policy": "cores", "physical": True},
            "bind.cores: 56 physical cores (0-55) for 57 local ranks, need at least one each",
        ),
        (
            "xeon-2s-ht",
            3,
            {"policy": "cores", "remainder": "error"},
            "bind.cores: 56 cores do not divide evenly among 3 local ranks (bind.remainder=error; use 'drop' or 'spread')",
        ),
        (
            "epyc-nps4",
            3,
            {"policy": "numa", "remainder": "error"},
            "bind.policy=numa: 4 NUMA nodes do not divide evenly among 3 local ranks (bind.remainder=error; use 'drop' or 'spread')",
        ),
        (
            "epyc-nps4",
            6,
            {"policy": "numa", "remainder": "error"},
            "bind.policy=numa: 6 local ranks do not divide evenly among 4 NUMA nodes (bind.remainder=error)",
        ),
        (
            "this-vm",
            1,
            {"policy": "socket"},
            "bind.policy: invalid value 'socket', expected one of none, cores, numa",
        ),
        (
            "this-vm",
            1,
            {"policy": "corse"},
            "bind.policy: invalid value 'corse', expected one of none, cores, numa (did you mean 'cores'?)",
        ),
        (
            "this-vm",
            1,
            {"remainder": "drops"},
            "bind.remainder: invalid value 'drops', expected one of drop, spread, error (did you mean 'drop'?)",
        ),
        (
            "this-vm",
            1,
            {"memory": 3},
            "BindSpec.memory: 3 is not of type str",  # the plan's record refuses it before any policy runs
        ),
        (
            "this-vm",
            1,
            {"gpu_vendor": "apple"},
            "bind.gpu_vendor: invalid value 'apple', expected one of nvidia, amd, intel",
        ),
        (
            "this-vm",
            1,
            {"policy": "cores", "cores": "5-2"},
            "bind.cores: reversed range '5-2'",
        ),
        (
            "this-vm",
            1,
            {"policy": "cores", "cores": 1.5},
            "bind.cores: expected a CPU list like '0-3,8-11', an int or a list, got float 1.5",
        ),
        (
            "this-vm",
            4,
            {"gpus": 2},
            "bind.gpus: 2 GPU(s) (0,1) for 4 local ranks, need at least one each",
        ),
        (
            "this-vm",
            3,
            {"gpus": [0, 1]},
            "bind.gpus: 2 GPU(s) (0,1) for 3 local ranks, need at least one each",
        ),
        (
            "this-vm",
            1,
            {"gpus": True},
            "bind.gpus: true is not a GPU count; give a count (4) or a list ([0,1,2,3])",
        ),
        ("this-vm", 1, {"gpus": [0, 0]}, "bind.gpus: device 0 listed twice"),
        ("this-vm", 1, {"gpus": "0-1,1"}, "bind.gpus: device 1 listed twice"),
        (
            "this-vm",
            1,
            {"gpus": [0, None]},
            "bind.gpus: device ids must be ints or strings, got NoneType None",
        ),
        ("this-vm", 1, {"gpus": [-1]}, "bind.gpus: negative device id -1"),
        ("this-vm", 1, {"gpus": -2}, "bind.gpus: -2 is not a valid GPU count"),
        ("this-vm", 1, {"gpus": "0;1"}, "bind.gpus: '0;1' is not a device id"),
        (
            "this-vm",
            1,
            {"gpus": 1.0},
            "bind.gpus: expected a count, a list of device ids or null, got float 1.0",
        ),
    ],
)
def test_errors(name: str, lws: int, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError) as info:
        rows(name, lws, **spec)
    assert str(info.value) == message


def test_bad_rank_arguments() -> None:
    t = topo("this-vm")
    with pytest.raises(LaunchError, match="local world size must be a positive integer, got 0"):
        layout(bind_record(), local_world_size=0, topology=t, usable=t.cpus, env={})


# -------------------------------------------------------------------------------------------------- env


def test_omp_threads_kept_when_user_set_it() -> None:
    placements = lay("xeon-2s-ht", 2, env={"OMP_NUM_THREADS": "4"}, policy="cores")
    assert all("OMP_NUM_THREADS" not in p.env for p in placements)
    assert "OMP_NUM_THREADS kept at 4 (set by user)" in placements[0].notes
    assert all("OMP_NUM_THREADS" not in p.env for p in lay("xeon-2s-ht", 2, policy="cores", omp_threads=False))


def test_gpus_count_list_and_vendors() -> None:
    got = [p.env for p in lay("this-vm", 2, gpus=4)]
    assert got == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    got = [p.env for p in lay("this-vm", 2, gpus=[3, 1], gpu_vendor="amd")]
    assert got == [{"ROCR_VISIBLE_DEVICES": "3"}, {"ROCR_VISIBLE_DEVICES": "1"}]
    got = [p.env for p in lay("this-vm", 2, gpus="0.0,0.1", gpu_vendor="intel")]
    assert got == [{"ZE_AFFINITY_MASK": "0.0"}, {"ZE_AFFINITY_MASK": "0.1"}]
    uuid = "GPU-5e3f0c1a-1b2c-3d4e-5f60-718293a4b5c6"
    assert lay("this-vm", 1, gpus=[uuid])[0].env == {"CUDA_VISIBLE_DEVICES": uuid}
    assert [p.env for p in lay("this-vm", 2, gpus="0-3")] == [
        {"CUDA_VISIBLE_DEVICES": "0,1"},
        {"CUDA_VISIBLE_DEVICES": "2,3"},
    ]
    three = lay("this-vm", 2, gpus=3)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in three] == ["0", "1"]
    assert "GPU(s) 2 unused (3 for 2 ranks)" in three[0].notes
    for off in (None, False, "off", "none", 0, []):
        assert lay("this-vm", 2, gpus=off)[0].env == {}


@pytest.mark.parametrize(
    ("vendor", "var"),
    [
        ("nvidia", "CUDA_VISIBLE_DEVICES"),
        ("amd", "ROCR_VISIBLE_DEVICES"),
        ("amd", "HIP_VISIBLE_DEVICES"),
        ("amd", "CUDA_VISIBLE_DEVICES"),
        ("intel", "ZE_AFFINITY_MASK"),
    ],
)
def test_existing_visibility_is_never_overridden(vendor: str, var: str) -> None:
    with pytest.raises(LaunchError) as info:
        lay("this-vm", 2, env={var: "1"}, gpus=2, gpu_vendor=vendor)
    assert str(info.value) == (
        f"bind.gpus is set but {var}='1' is already in the environment (set by you or the process manager); "
        "ds-helper never overrides it: unset it or set bind.gpus=null"
    )
    # without bind.gpus the variable is simply left as it is
    assert lay("this-vm", 2, env={var: "1"}, gpu_vendor=vendor)[0].env == {}


def test_kmp_affinity_note_or_error() -> None:
    env = {"KMP_AFFINITY": "granularity=fine,compact,1,0"}
    p = lay("this-vm", 2, env=env, policy="cores")[0]
    note = (
        "KMP_AFFINITY=granularity=fine,compact,1,0 kept: Intel OpenMP pins threads inside the rank's cores; "
        "unset it if threads end up on one core"
    )
    assert p.notes == [note]
    assert lay("this-vm", 2, env=env)[0].notes == []  # no binding, no conflict
    assert lay("this-vm", 2, env={"KMP_AFFINITY": "disabled"}, policy="cores")[0].notes == []
    ok = {"KMP_AFFINITY": "granularity=fine,proclist=[0],explicit"}
    assert lay("this-vm", 1, env=ok, policy="cores")[0].notes[0].startswith("KMP_AFFINITY=")
    bad = {"KMP_AFFINITY": "granularity=fine,proclist=[0,{1}],explicit"}
    with pytest.raises(LaunchError) as info:
        lay("this-vm", 2, env=bad, policy="cores")
    assert str(info.value) == (
        "KMP_AFFINITY='granularity=fine,proclist=[0,{1}],explicit' pins OpenMP threads to CPUs 1 outside local rank "
        "0's cores 0; unset KMP_AFFINITY or set bind.policy=none"
    )


# ------------------------------------------------------------------------------------------------ output


def test_table_and_memory_policies() -> None:
    placements = lay("xeon-max-9480-flat", 2, policy="numa", gpus=2)
    expected = [
        "local rank  cores                 memory       GPU  threads",
        "0           0-55,112-167 (112)    preferred 2  0    112",
        "1           56-111,168-223 (112)  preferred 3  1    112",
        "note: each rank sees its GPU(s) renumbered from 0 (CUDA_VISIBLE_DEVICES): use device 0, not LOCAL_RANK",
    ]
    assert format_layout_table(placements).splitlines() == expected
    assert (placements[0].mem_policy, placements[0].mem_nodes) == ("preferred", (2,))
    flat = lay("xeon-max-9480-flat", 1, policy="numa")[0]
    assert (flat.mem_policy, flat.mem_nodes) == ("preferred", (2, 3))
    snc = lay("xeon-2s-ht-snc2", 2, policy="numa")[1]
    assert (snc.mem_policy, snc.mem_nodes) == ("bind", (2, 3))
    single = lay("this-vm", 2, policy="numa")[0]
    assert (single.mem_policy, single.mem_nodes) == (None, ())
    assert (
        format_layout_table(lay("this-vm", 1))
        == "local rank  cores  memory  GPU  threads\n0           -      -       -    -"
    )


# ------------------------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(MACHINES),
    lws=st.integers(min_value=1, max_value=20),
    policy=st.sampled_from(["cores", "numa"]),
    physical=st.booleans(),
    remainder=st.sampled_from(["drop", "spread"]),
    data=st.data(),
)
def test_layout_invariants(name: str, lws: int, policy: str, physical: bool, remainder: str, data: Any) -> None:
    t = topo(name)
    usable = data.draw(st.sets(st.sampled_from(t.cpus), min_size=1))
    spec = bind_record(policy=policy, physical=physical, remainder=remainder)
    start = time.perf_counter()
    try:
        placements = layout(spec, local_world_size=lws, topology=t, usable=sorted(usable), env={})
    except LaunchError as exc:
        assert "\n" not in str(exc)
        return
    assert time.perf_counter() - start < 1.0
    assert len(placements) == lws
    seen: set[int] = set()
    for p in placements:
        assert p.cpus  # every rank gets at least one CPU
        assert set(p.cpus) <= usable  # never outside the usable set
        assert not seen & set(p.cpus)  # ranks never share a CPU
        seen |= set(p.cpus)
        assert p.env["OMP_NUM_THREADS"] == str(len(p.cpus))
        if policy == "numa" and lws >= len({t.node_of(c) for c in usable}):
            assert len({t.node_of(c) for c in p.cpus}) == 1  # one node per rank
    if remainder == "spread" and not physical and policy == "cores":
        assert seen == usable  # spread uses everything


@settings(max_examples=200, deadline=None)
@given(
    cores=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=12),
        st.lists(st.integers(-2, 200), max_size=5),
    ),
    gpus=st.one_of(
        st.none(),
        st.integers(-3, 9),
        st.text(max_size=8),
        st.lists(st.integers(-1, 9), max_size=5),
    ),
    policy=st.sampled_from(["none", "cores", "numa", "bogus"]),
    lws=st.integers(min_value=1, max_value=8),
)
def test_random_specs_only_launch_error(cores: object, gpus: object, policy: str, lws: int) -> None:
    t = topo("xeon-2s-ht")
    try:
        layout(
            bind_record(policy=policy, cores=cores, gpus=gpus),
            local_world_size=lws,
            topology=t,
            usable=t.cpus,
            env={},
        )
    except LaunchError as exc:
        assert "\n" not in str(exc)
