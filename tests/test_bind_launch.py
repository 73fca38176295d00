"""Binding applied for real: ranks under real MPICH / Open MPI read their affinity from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import DATA, DS_HELPER, assert_user_error, clean_env, ds, json_lines, mpich, openmpi
from ds_helper.compose.planner import make_plan
from ds_helper.compose.schema import BindSpec, Config, LauncherSpec
from ds_helper.rank.bind.topology import read_topology
from ds_helper.rank.plan import Plan
from ds_helper.rank.resolve import resolve

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two = pytest.mark.skipif(not TWO_CPUS, reason="this check places 2 ranks on 2 distinct CPUs")


def affinity(rows: list) -> list:
    return [(r["RANK"], r["cpus"], r["OMP_NUM_THREADS"]) for r in rows]


@pytest.mark.mpi
@needs_two
@pytest.mark.parametrize(
    "spelling",
    [
        "bind.cores=0-1",
        "bind.cores=0,1",
        "bind.cores=[0,1]",
        "bind.cores='0-1'",
        "bind.cores=0-1:1",
        "bind.cores=[0-1]",
    ],
)
def test_mpich_two_ranks_on_cores_0_and_1(spelling: str) -> None:
    result = mpich(2, DS_HELPER, "launcher=mpich", "script=show.py", spelling)
    assert result.returncode == 0, result.stderr
    assert affinity(json_lines(result.stdout)) == [("0", [0], "1"), ("1", [1], "1")]


@pytest.mark.mpi
@needs_two
def test_deepspeed_binding_flags_are_applied_at_last() -> None:
    result = mpich(2, DS_HELPER, "--launcher", "mpich", "--bind_cores_to_rank", "--bind_core_list", "0,1", "show.py")
    assert affinity(json_lines(result.stdout)) == [("0", [0], "1"), ("1", [1], "1")]
    # --bind_cores_to_rank alone: the CPUs this rank may use, split among the local ranks.
    result = mpich(2, DS_HELPER, "--launcher", "mpich", "--bind_cores_to_rank", "show.py")
    assert affinity(json_lines(result.stdout)) == [("0", [0], "1"), ("1", [1], "1")]


@pytest.mark.mpi
@needs_two
def test_openmpi_with_bind_to_none_gets_ds_helpers_binding() -> None:
    result = openmpi(2, DS_HELPER, "bind.cores=0-1", "show.py")
    assert affinity(json_lines(result.stdout)) == [("0", [0], "1"), ("1", [1], "1")]


@pytest.mark.mpi
@needs_two
def test_openmpi_default_core_binding_and_a_core_list_outside_it_is_a_clear_error() -> None:
    # Open MPI binds each rank to one core when np <= 2: the interplay is shown, not papered over.
    result = openmpi(2, DS_HELPER, "bind.cores=0-1", "show.py", mpirun_flags=())
    assert result.returncode != 0
    assert_user_error(result, "not usable by this process", "already bound it", "--bind-to none")
    # Keeping the manager's binding works, and the dry run says the rank was pinned.
    kept = openmpi(2, DS_HELPER, "show.py", mpirun_flags=())
    assert sorted(r["cpus"] for r in json_lines(kept.stdout)) == [[0], [1]]
    dry = openmpi(2, DS_HELPER, "--dry-run", "show.py", mpirun_flags=())
    assert dry.stdout.count("already bound it") == 2


def test_no_binding_by_default_and_bind_none_turns_everything_off() -> None:
    everything = sorted(os.sched_getaffinity(0))
    [row] = json_lines(ds("show.py").stdout)
    assert (row["cpus"], row["OMP_NUM_THREADS"]) == (everything, None)
    [row] = json_lines(ds("bind=none", "bind.cores=0", "show.py").stdout)
    assert (row["cpus"], row["OMP_NUM_THREADS"]) == (everything, None)


def test_users_omp_num_threads_is_kept() -> None:
    [row] = json_lines(ds("bind.cores=0", "show.py", env=clean_env(OMP_NUM_THREADS="4")).stdout)
    assert (row["cpus"], row["OMP_NUM_THREADS"]) == ([0], "4")


def test_numa_policy_and_memory_binding_on_this_machine() -> None:
    result = ds("bind=numa", "bind.memory=local", "show.py")
    assert result.returncode == 0, result.stderr
    [row] = json_lines(result.stdout)
    assert row["cpus"] == sorted(os.sched_getaffinity(0))
    refused = "memory binding refused" in result.stderr
    strict = ds("bind=numa", "bind.memory=local", "bind.strict=true", "show.py")
    assert (strict.returncode != 0) == refused  # refused: warning, or an error with bind.strict=true


@pytest.mark.parametrize(("memory", "policy"), [("local", "bind"), ("preferred", "preferred"), ("none", "default")])
def test_the_memory_policy_is_the_kernels_as_numactl_reads_it(memory: str, policy: str) -> None:
    """The script inherits the policy ds-helper set on itself (set_mempolicy, kept through exec): read back by a
    program ds-helper becomes, numactl, which asks the kernel (get_mempolicy)."""
    overrides = ("log.quiet=true", "no_python=true", "bind=numa", f"bind.memory={memory}", "script=numactl")
    result = ds(*overrides, "--", "--show")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    shown = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert shown["policy"] == policy
    if memory == "local":  # bound to the NUMA nodes of the rank's cores
        assert shown["membind"].split() == shown["nodebind"].split()


@pytest.mark.mpi
@needs_two
def test_dry_run_prints_the_node_table() -> None:
    out = mpich(2, DS_HELPER, "--dry-run", "bind.cores=0-1", "show.py").stdout
    assert out.count("local rank  cores  memory  GPU  threads") == 2
    assert "0           0 (1)" in out and "1           1 (1)" in out


BIND_ERRORS = [
    (["bind.cores=5-2"], "reversed range"),
    (["bind.cores=abc"], "bind.cores"),
    (["bind.cores=0,,1"], "empty item"),
    (["bind.cores=-1"], "bind.cores"),
    (["bind.cores="], "empty CPU list"),
    (["bind.cores=0-99999999999"], "bind.cores"),
    (["bind.cores=4096"], "not usable"),
    (["bind.policy=sockets"], "bind.policy"),
    (["bind.gpus=2", "bind.gpu_vendor=nvidia"], "CUDA_VISIBLE_DEVICES"),
]


@pytest.mark.parametrize(("args", "fragment"), BIND_ERRORS, ids=[" ".join(a) for a, _ in BIND_ERRORS])
def test_binding_mistakes_are_one_line_and_start_nothing(args: list, fragment: str) -> None:
    env = clean_env(CUDA_VISIBLE_DEVICES="0") if "bind.gpus=2" in args else None
    result = ds(*args, "show.py", env=env)
    assert result.returncode == 2
    assert_user_error(result, fragment)


@pytest.mark.mpi
def test_more_local_ranks_than_cores_is_an_error_on_every_rank() -> None:
    result = mpich(3, DS_HELPER, "bind.cores=0-1", "show.py")
    assert result.returncode != 0 and result.stderr.count("ds-helper: error: bind.cores") == 3


def _plan(**bind: object) -> Plan:
    config = Config(script="show.py", launcher=LauncherSpec(name="auto"), bind=BindSpec(**bind))  # type: ignore[arg-type]
    launchers = [
        LauncherSpec(
            name="slurm",
            detect=["SLURM_STEP_ID"],
            rank=["SLURM_PROCID"],
            local_rank=["SLURM_LOCALID"],
            local_world_size=["SLURM_NTASKS_PER_NODE"],
        )
    ]
    cwd = os.getcwd()
    os.chdir(Path(__file__).parent / "scripts")
    try:
        return make_plan(config, launchers)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("machine", "bind", "expect"),
    [
        ("xeon-2s-ht", {"policy": "numa"}, [("0-27,56-83", "1 bind 0"), ("28-55,84-111", "1 bind 1")]),
        (
            "xeon-max-9480-flat",
            {"policy": "numa"},
            [("0-55,112-167", "1 preferred 2"), ("56-111,168-223", "1 preferred 3")],
        ),
        ("xeon-2s-ht", {"policy": "cores", "physical": True}, [("0-27", "1 bind 0"), ("28-55", "1 bind 1")]),
    ],
)
def test_recorded_machines_through_the_resolver(machine: str, bind: dict, expect: list) -> None:
    from ds_helper.rank.bind.cpuset import format_cpus

    topology = read_topology(DATA / "topology" / machine)
    plan = _plan(**bind)
    for local_rank, (cores, memory) in enumerate(expect):
        env = {
            "SLURM_STEP_ID": "0",
            "SLURM_PROCID": str(local_rank),
            "SLURM_LOCALID": str(local_rank),
            "SLURM_NTASKS_PER_NODE": "2",
        }
        launch = resolve(plan, env, [], read_machine=lambda: (topology, topology.cpus))
        placement = launch.placement
        assert placement is not None and placement.cpus is not None
        assert format_cpus(placement.cpus) == cores
        shown = f"1 {placement.mem_policy} {format_cpus(placement.mem_nodes)}"
        assert shown == memory
        assert launch.env["OMP_NUM_THREADS"] == str(len(placement.cpus))
