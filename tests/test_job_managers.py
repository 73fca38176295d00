"""Jobs started by ds-helper under the real managers of this machine: MPICH (one node, and two "nodes" through
Hydra's ssh launcher pointed at tests/scripts/ssh_standin.py), Open MPI, and the two-node Slurm cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import DS_HELPER, MPICH, OPENMPI, SCRIPTS, assert_user_error, clean_env, ds, json_lines, mpich

MPICH_JOB = ["launcher=mpich", f"job.program={MPICH}"]
# Hydra's ssh launcher, with a stand-in for ssh: node1 and node2 are this machine (/etc/hosts, tests/slurm/README.md).
TWO_NODES = [
    *MPICH_JOB,
    "job.hosts=[node1,node2]",
    f"job.manager_args=[-launcher,ssh,-launcher-exec,{SCRIPTS / 'ssh_standin.py'}]",
]
OPENMPI_JOB = ["launcher=openmpi", f"job.program={OPENMPI}", "job.manager_args=[--allow-run-as-root,--oversubscribe]"]


@pytest.fixture
def node_names() -> None:
    """node1 and node2 resolve to this machine (the Slurm cluster's set-up adds them to /etc/hosts)."""
    import slurm_cluster

    slurm_cluster._ensure_hosts()


def _layout(result: subprocess.CompletedProcess[str]) -> List[Tuple[str, ...]]:
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_lines(result.stdout)
    return [
        (r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["LOCAL_WORLD_SIZE"], r["WORLD_SIZE"], r["MASTER_ADDR"])
        for r in rows
    ]


def _one_port(result: subprocess.CompletedProcess[str]) -> None:
    ports = {r["MASTER_PORT"] for r in json_lines(result.stdout)}
    assert len(ports) == 1 and ports != {"29500"}, ports


@pytest.mark.mpi
@pytest.mark.parametrize(("name", "job"), [("mpich", MPICH_JOB), ("openmpi", OPENMPI_JOB)])
def test_one_node_job_started_by_the_manager(name: str, job: List[str]) -> None:
    result = ds(*job, "job.ranks=2", "show.py", "--lr", "1", env=clean_env(SHOW_ALSO="DS_HELPER_PLAN"))
    assert _layout(result) == [(str(r), str(r), "0", "2", "2", "127.0.0.1") for r in range(2)]
    _one_port(result)
    rows = json_lines(result.stdout)
    assert all(r["argv"] == ["--lr", "1"] and r["DS_HELPER_PLAN"] is None for r in rows)
    assert f"launcher={name}:" in result.stderr  # rank 0 logged, under the manager it was started by


@pytest.mark.mpi
def test_mpich_on_two_nodes_gives_node_rank_and_master_addr(node_names: None) -> None:
    result = ds(*TWO_NODES, "job.ranks=4", "show.py", timeout=180)
    assert _layout(result) == [(str(r), str(r % 2), str(r // 2), "2", "4", "node1") for r in range(4)]
    _one_port(result)


@pytest.mark.mpi
@pytest.mark.torch
def test_gloo_all_reduce_over_four_ranks_on_two_mpich_nodes(node_names: None) -> None:
    pytest.importorskip("torch", reason="torch==2.13.0 is installed by .ci/run")
    result = ds(*TWO_NODES, "job.ranks=4", "gloo_allreduce.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_lines(result.stdout)
    assert [(r["rank"], r["world"], r["sum"], r["local_rank"]) for r in rows] == [(r, 4, 10.0, r % 2) for r in range(4)]


@pytest.mark.mpi
def test_exit_code_of_a_failing_rank_comes_out_of_a_started_job() -> None:
    assert ds(*MPICH_JOB, "job.ranks=2", "exit_with.py", "3").returncode == 3


@pytest.mark.mpi
def test_under_a_manager_a_contradicted_job_value_is_one_error_naming_both() -> None:
    result = mpich(2, DS_HELPER, "job.ranks=4", "show.py")
    assert result.returncode != 0 and '{"RANK"' not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("ds-helper: error:")]
    assert errors and set(errors) == {"ds-helper: error: job.ranks=4 but launcher=mpich started 2 ranks (PMI_SIZE=2)"}
    agreeing = mpich(2, DS_HELPER, "job.ranks=2", "show.py")
    assert [r["RANK"] for r in json_lines(agreeing.stdout)] == ["0", "1"]


def _hydra_openers(argv: List[str], tmp_path: Path) -> Dict[int, int]:
    """pid -> number of files of the Hydra package (hydra-core) each process of the whole job opened."""
    import hydra

    package = os.path.dirname(hydra.__file__)
    trace = tmp_path / "trace"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(trace), *argv],
        cwd=SCRIPTS,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json_lines(result.stdout)) == 4
    opened: Dict[int, int] = {}
    for line in trace.read_text().splitlines():
        pid, _, call = line.partition(" ")
        if f'"{package}/' in call and "ENOENT" not in call:
            opened[int(pid)] = opened.get(int(pid), 0) + 1
    return opened


@pytest.mark.mpi
def test_hydra_is_imported_once_per_job_never_per_rank(tmp_path: Path) -> None:
    job = _hydra_openers([DS_HELPER, *MPICH_JOB, "job.ranks=4", "show.py"], tmp_path)
    assert len(job) == 1, job  # the job side, and no rank
    per_rank = _hydra_openers([MPICH, "-n", "4", DS_HELPER, "show.py"], tmp_path)
    assert len(per_rank) == 4, per_rank  # the per-rank compose path, for contrast: every rank


@pytest.mark.slurm
def test_slurm_job_outside_an_allocation(slurm_cluster) -> None:
    result = ds(
        "launcher=slurm",
        "job.nodes=2",
        "job.ranks_per_node=2",
        "show.py",
        env=slurm_cluster.env(clean_env()),
        timeout=180,
    )
    assert _layout(result) == [(str(r), str(r % 2), str(r // 2), "2", "4", "node1") for r in range(4)]
    _one_port(result)
    assert "srun --disable-status --ntasks 4 --nodes 2 --ntasks-per-node 2 --export=ALL,DS_HELPER_PLAN" in result.stderr


@pytest.mark.slurm
def test_slurm_job_inside_sbatch_takes_the_allocations_shape(slurm_cluster, tmp_path: Path) -> None:
    batch = tmp_path / "job.sh"
    batch.write_text(f"#!/bin/sh\nexec {DS_HELPER} launcher=slurm show.py\n")
    batch.chmod(0o755)
    out = tmp_path / "out"
    result = subprocess.run(
        ["sbatch", "-N", "2", "--ntasks-per-node=2", "--wait", "-o", str(out), str(batch)],
        cwd=SCRIPTS,
        env=slurm_cluster.env(clean_env()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.read_text()
    assert result.returncode == 0, (result.stderr, text)
    rows = json_lines(text)
    assert [(r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["WORLD_SIZE"], r["MASTER_ADDR"]) for r in rows] == [
        (str(r), str(r % 2), str(r // 2), "4", "node1") for r in range(4)
    ]
    assert len({r["MASTER_PORT"] for r in rows}) == 1


def test_a_missing_manager_program_is_one_error() -> None:
    assert_user_error(
        ds("launcher=mpich", "job.program=no-such-mpiexec", "job.ranks=2", "show.py"),
        "'no-such-mpiexec' not found on PATH",
    )


@pytest.mark.mpi
def test_the_readmes_first_example_runs_as_written() -> None:
    result = ds("job.ranks=4", "launcher=mpich", "show.py", "--lr", "3e-4")  # mpich.yaml's own program
    assert _layout(result) == [(str(r), str(r), "0", "4", "4", "127.0.0.1") for r in range(4)]
    note = "(OMP_NUM_THREADS: each rank's share of its node's CPUs, unless set)"
    assert f"job of 4 ranks {note}: mpiexec.hydra -n 4 -print-all-exitcodes -genv DS_HELPER_PLAN" in result.stderr
