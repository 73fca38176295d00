"""ds-helper under a real two-node Slurm cluster (two slurmd on loopback; tests/slurm/slurm_cluster.py)."""

from __future__ import annotations

import signal
import subprocess

import pytest
from conftest import DS_HELPER, SCRIPTS, json_lines

pytestmark = pytest.mark.slurm

STEP = ("-N", "2", "-n", "4")


def ranks(result: subprocess.CompletedProcess) -> list:
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json_lines(result.stdout)
    return [
        (r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["LOCAL_WORLD_SIZE"], r["WORLD_SIZE"], r["MASTER_ADDR"])
        for r in rows
    ]


TWO_NODES = [
    ("0", "0", "0", "2", "4", "node1"),
    ("1", "1", "0", "2", "4", "node1"),
    ("2", "0", "1", "2", "4", "node1"),
    ("3", "1", "1", "2", "4", "node1"),
]


@pytest.mark.parametrize("launcher", [[], ["launcher=slurm"]], ids=["auto", "explicit"])
def test_two_nodes_four_ranks(slurm_cluster, launcher: list) -> None:
    result = slurm_cluster.srun(*STEP, DS_HELPER, *launcher, "show.py", "--x", cwd=SCRIPTS)
    assert ranks(result) == TWO_NODES
    rows = json_lines(result.stdout)
    assert len({r["MASTER_PORT"] for r in rows}) == 1 and all(r["argv"] == ["--x"] for r in rows)


@pytest.mark.parametrize("plugin", ["pmi2", "cray_shasta"])
def test_mpi_plugins_add_pmi_and_pals_variables_and_auto_still_picks_slurm(slurm_cluster, plugin: str) -> None:
    result = slurm_cluster.srun(f"--mpi={plugin}", *STEP, DS_HELPER, "--dry-run", "show.py", cwd=SCRIPTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("launcher=slurm (auto: SLURM_STEP_ID, SLURM_PROCID set)") == 4
    shown = slurm_cluster.srun(f"--mpi={plugin}", *STEP, DS_HELPER, "show.py", cwd=SCRIPTS)
    assert ranks(shown) == TWO_NODES


def test_bind_cores_under_srun(slurm_cluster) -> None:
    result = slurm_cluster.srun(
        "-N", "1", "-n", "2", "--cpu-bind=none", DS_HELPER, "bind.cores=0-1", "show.py", cwd=SCRIPTS
    )
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["cpus"], r["OMP_NUM_THREADS"]) for r in rows] == [("0", [0], "1"), ("1", [1], "1")]


def test_exit_code_of_a_failing_rank_comes_out_of_srun(slurm_cluster) -> None:
    assert slurm_cluster.srun(*STEP, DS_HELPER, "exit_with.py", "3", cwd=SCRIPTS).returncode == 3


def test_scancel_sigterm_reaches_the_script(slurm_cluster) -> None:
    proc = subprocess.Popen(
        ["srun", "-N", "1", "-n", "1", "--job-name=ds-sigterm", DS_HELPER, "on_sigterm.py"],
        cwd=SCRIPTS,
        env=slurm_cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready ")
        squeue = subprocess.run(
            ["squeue", "-h", "-n", "ds-sigterm", "-o", "%i"],
            env=slurm_cluster.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        job = squeue.stdout.split()[0]
        # scancel of the job sends SIGTERM (then SIGKILL after KillWait) to the tasks (tests/slurm/README.md).
        subprocess.run(["scancel", job], env=slurm_cluster.env(), check=True)
        out, _ = proc.communicate(timeout=60)
        assert f"got signal {int(signal.SIGTERM)}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.torch
def test_torch_gloo_all_reduce_over_four_ranks_on_two_nodes(slurm_cluster) -> None:
    pytest.importorskip("torch", reason="torch==2.13.0 is installed by .ci/run")
    result = slurm_cluster.srun(*STEP, DS_HELPER, "gloo_allreduce.py", cwd=SCRIPTS, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json_lines(result.stdout)
    assert [(r["rank"], r["world"], r["sum"]) for r in rows] == [(i, 4, 10.0) for i in range(4)]
