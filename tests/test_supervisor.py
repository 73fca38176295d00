"""The job ds-helper starts and supervises itself (``ds-helper job.ranks=N``), tried as a user would: a real
interactive shell on a pseudo terminal for Ctrl-C and Ctrl-Z, real signals, real children and grandchildren."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import termios
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import DS_HELPER, OPENMPI, SCRIPTS, alive_with, clean_env, ds, json_lines, run, start_watched, wait_for


class Shell:
    """An interactive bash on a fresh pseudo terminal: what a person types goes through the terminal's driver,
    which turns Ctrl-C into SIGINT and Ctrl-Z into SIGTSTP for the foreground job, as at a desk."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.master, slave = pty.openpty()

        def take_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "PS1": "PROMPT> ", "TERM": "dumb"},
            cwd=SCRIPTS,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
        os.close(slave)
        self.seen = b""
        self.cursor = 0
        self.read_until(b"PROMPT> ")

    def read_until(self, word: bytes, count: int = 1, timeout: float = 120) -> bytes:
        """What the terminal showed since the last call, up to where ``word`` appeared ``count`` times."""
        start = self.cursor
        deadline = time.monotonic() + timeout
        while self.seen[start:].count(word) < count and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.5)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the shell is gone
                    break
        assert self.seen[start:].count(word) >= count, self.seen[start:].decode(errors="replace")
        end = start
        for _ in range(count):
            end = self.seen.index(word, end) + len(word)
        self.cursor = end  # what came after the word is for the next call
        return self.seen[start:end]

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def run(self, command: str) -> None:
        """Start ``command`` as the shell's foreground job."""
        self.type(command.encode() + b"\n")

    def exit_code(self) -> int:
        """The foreground job's exit code, once it has ended and the shell prompts again."""
        self.read_until(b"PROMPT> ", timeout=120)
        self.type(b"echo EXIT=$?\n")
        shown = self.read_until(b"PROMPT> ")
        found = re.search(rb"EXIT=(\d+)", shown)
        assert found, shown.decode(errors="replace")
        return int(found.group(1))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def shell(tmp_path: Path):
    terminal = Shell(clean_env(SIGNAL_DIR=str(tmp_path)))
    yield terminal
    terminal.close()


def records(folder: Path, suffix: str = "") -> Dict[str, List[str]]:
    return {p.name.removesuffix(suffix): p.read_text().split() for p in sorted(folder.glob(f"*{suffix}"))}


def process_parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def process_state(pid: int) -> str:
    """R, S, T (stopped), ... from /proc/PID/stat."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# --- signals as if each rank ran alone at the terminal --------------------------------------------------------


def test_ctrl_c_at_a_terminal_lets_every_checkpointing_rank_save(shell: Shell, tmp_path: Path) -> None:
    shell.run(f"{DS_HELPER} job.ranks=4 log.quiet=true checkpoint.py")
    shell.read_until(b"ready", 4)
    shell.type(b"\x03")
    assert shell.exit_code() == 130  # the ranks' own code, as bare python's after Ctrl-C
    assert records(tmp_path, ".signals") == {str(r): ["SIGINT"] for r in range(4)}  # once each, never twice
    assert records(tmp_path, ".saved") == {str(r): ["saved"] for r in range(4)}  # nobody cut short by SIGTERM


def test_ctrl_z_stops_every_rank_and_fg_continues_them(shell: Shell) -> None:
    assert ctrl_z_then_fg(shell, [DS_HELPER, "job.ranks=2", "log.quiet=true", "sleeper.py", "ticking"]) == 130


def ctrl_z_then_fg(shell: Shell, command: List[str]) -> int:
    """Ctrl-Z stops both ranks (their pids printed by sleeper.py), ``fg`` continues them, Ctrl-C ends the job:
    its exit code."""
    shell.run(shlex.join(command))
    shown = shell.read_until(b"ready", 2) + shell.read_until(b"\n")  # the second one's pid too
    pids = [int(pid) for pid in re.findall(rb"ready (\d+)", shown)]
    shell.type(b"\x1a")
    shell.read_until(b"Stopped")
    shell.read_until(b"PROMPT> ")  # the shell has the terminal back
    deadline = time.monotonic() + 30
    while {process_state(pid) for pid in pids} != {"T"} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [process_state(pid) for pid in pids] == ["T", "T"]
    shell.type(b"fg\n")
    deadline = time.monotonic() + 30
    while "T" in {process_state(pid) for pid in pids} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "T" not in [process_state(pid) for pid in pids]
    shell.type(b"\x03")
    return shell.exit_code()


def test_every_forwardable_signal_reaches_every_rank_once_and_ds_helper_survives(tmp_path: Path) -> None:
    proc = start_watched(
        [DS_HELPER, "job.ranks=2", "log.quiet=true", "log.grace=100", "catch_all.py"],
        clean_env(SIGNAL_DIR=str(tmp_path)),
    )
    wait_for(proc, "ready", 2)
    sent: List[str] = []
    for name in ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT", "SIGINT"):
        proc.send_signal(getattr(signal, name))
        sent.append(name)
        deadline = time.monotonic() + 30
        while records(tmp_path) != {"0": sent, "1": sent} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert records(tmp_path) == {"0": sent, "1": sent}
        assert proc.poll() is None, f"ds-helper died of {name}"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert records(tmp_path) == {"0": [*sent, "SIGTERM"], "1": [*sent, "SIGTERM"]}


def test_sigterm_gives_every_rank_log_grace_to_save(tmp_path: Path) -> None:
    proc = start_watched(
        [DS_HELPER, "job.ranks=3", "log.quiet=true", "checkpoint.py"], clean_env(SIGNAL_DIR=str(tmp_path))
    )
    wait_for(proc, "ready", 3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert records(tmp_path, ".saved") == {str(r): ["saved"] for r in range(3)}


# --- nothing left behind --------------------------------------------------------------------------------------


def _stop_by_sigterm(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize(
    ("case", "options", "env", "code"),
    [
        ("a rank fails", [], {"FAIL_RANK": "1", "EXIT_CODE": "3"}, 3),
        ("every rank succeeds", [], {"EXIT_CODE": "0"}, 0),
        ("the user stops it", [], {}, 128 + signal.SIGTERM),
        ("it times out", ["job.timeout=3"], {}, 124),
    ],
)
def test_the_ranks_children_and_grandchildren_end_with_the_job(
    case: str, options: List[str], env: Dict[str, str], code: int
) -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, "job.ranks=2", "log.quiet=true", "log.grace=5", *options, "with_children.py", token]
    proc = start_watched(command, clean_env(**env))
    try:
        if case == "the user stops it":
            wait_for(proc, "ready", 2)
            assert len(alive_with(token)) == 2 * 3 + 1  # each rank, its child and grandchild; ds-helper
            _stop_by_sigterm(proc)
        proc.communicate(timeout=60)
        assert proc.returncode == code
        assert alive_with(token) == [], case  # gone by the time ds-helper exits
    finally:
        for pid in alive_with(token):
            os.kill(pid, signal.SIGKILL)


# --- the root cause -------------------------------------------------------------------------------------------


def test_a_failing_rank_is_named_with_its_host_exit_code_and_traceback() -> None:
    result = ds("job.ranks=3", "log.quiet=true", "divide_by_zero.py", timeout=120)
    assert result.returncode == 1
    last = result.stderr.rstrip().splitlines()
    assert last[-1].startswith(f"ds-helper: job failed: rank 1 on {socket.gethostname()} exited with code 1"), last
    assert "ZeroDivisionError: division by zero" in last[-2], last
    assert "Traceback (most recent call last):" in "\n".join(last[-8:])


def test_a_rank_killed_by_a_signal_is_named_by_the_signal(tmp_path: Path) -> None:
    env = clean_env(SIGNAL_DIR=str(tmp_path), FAIL_RANK="0", FAIL_CODE="0", FAIL_SIGNAL="SEGV")
    result = ds("job.ranks=2", "log.quiet=true", "one_fails.py", env=env, timeout=120)
    assert result.returncode == 128 + signal.SIGSEGV
    assert "rank 0 on " in result.stderr.splitlines()[-1]
    assert "was killed by SIGSEGV (exit code 139)" in result.stderr.splitlines()[-1]


# --- restarts and the time limit ------------------------------------------------------------------------------


def test_restarts_start_the_whole_job_again_with_a_fresh_port_and_the_attempt_number(tmp_path: Path) -> None:
    env = clean_env(SIGNAL_DIR=str(tmp_path))
    result = ds("job.ranks=2", "log.quiet=true", "job.restarts=2", "fail_once.py", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    attempts = sorted((r["TORCHELASTIC_RESTART_COUNT"], r["RANK"]) for r in rows)
    assert attempts == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert all(r["DS_HELPER_RESTART_COUNT"] == r["TORCHELASTIC_RESTART_COUNT"] for r in rows)
    ports = {r["TORCHELASTIC_RESTART_COUNT"]: r["MASTER_PORT"] for r in rows}
    assert ports["0"] != ports["1"], ports
    assert result.stderr.count("ds-helper: restarting the job (restart 1 of job.restarts=2)") == 1, result.stderr


def test_restarts_give_up_after_n_with_the_failing_ranks_code(tmp_path: Path) -> None:
    env = clean_env(FAIL_TIMES="99", SIGNAL_DIR=str(tmp_path))
    result = ds("job.ranks=2", "log.quiet=true", "job.restarts=2", "fail_once.py", env=env, timeout=120)
    assert result.returncode == 3
    assert len(result.stdout.splitlines()) == 6  # 3 attempts of 2 ranks
    assert result.stderr.count("ds-helper: restarting the job") == 2
    assert result.stderr.rstrip().splitlines()[-1].startswith("ds-helper: job failed: rank 1")


def test_a_job_stopped_by_the_user_is_not_restarted(tmp_path: Path) -> None:
    proc = start_watched(
        [DS_HELPER, "job.ranks=2", "log.quiet=true", "job.restarts=3", "on_sigterm.py"],
        clean_env(SIGNAL_DIR=str(tmp_path)),
    )
    wait_for(proc, "ready", 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7 and "restarting" not in out and "ready" not in out  # no second attempt


def test_job_timeout_stops_the_job_says_so_and_exits_124() -> None:
    started = time.monotonic()
    result = ds("job.ranks=2", "log.quiet=true", "job.timeout=2", "log.grace=2", "stubborn.py", timeout=120)
    assert result.returncode == 124
    assert 2 <= time.monotonic() - started < 30
    assert "ds-helper: job.timeout=2: " in result.stderr


# --- output people can read -----------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [False, True])
def test_every_line_of_every_rank_arrives_whole(label: bool) -> None:
    options = ["log.label=true"] if label else []
    env = clean_env(LINES="1500", WIDTH="150")
    result = ds("job.ranks=4", "log.quiet=true", *options, "many_lines.py", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 * 1500
    pattern = re.compile(r"\[(\d)\] (\d)\2{149}" if label else r"(\d)\1{149}")
    broken = [line for line in lines if not pattern.fullmatch(line)]
    assert broken == [], broken[:3]
    if label:
        assert all(line[1] == line[4] for line in lines)  # the label is the writer's rank


def test_a_ranks_stdout_is_a_terminal_when_ds_helpers_is(shell: Shell) -> None:
    shell.run(f"{DS_HELPER} job.ranks=2 log.quiet=true is_terminal.py")
    assert shell.exit_code() == 0
    assert shell.seen.count(b"stdout is a terminal: True") == 2, shell.seen


# --- jobs started through a manager: ds-helper stays as the manager's parent ----------------------------------

_OPEN_MPI_ROOT = "job.manager_args=[--allow-run-as-root,--oversubscribe]"
MANAGER_JOBS = {
    "mpich": ["launcher=mpich", "job.program=mpiexec.mpich"],
    "openmpi": ["launcher=openmpi", "job.program=mpirun.openmpi", _OPEN_MPI_ROOT],
    # From PyPI, one venv each (.ci/install): Intel MPI, MPICH 5, Open MPI 5.
    "impi": ["launcher=impi", "job.program=/opt/mpi-venvs/impi/bin/mpiexec.hydra"],
    "mpich5": ["launcher=mpich", "job.program=/opt/mpi-venvs/mpich5/bin/mpiexec.hydra"],
    "openmpi5": ["launcher=openmpi", "job.program=/opt/mpi-venvs/openmpi5/bin/mpirun", _OPEN_MPI_ROOT],
}
HYDRA_STOPS = (["SIGUSR1", "SIGUSR2", "SIGHUP"], ["SIGUSR1", "SIGTERM"])  # Hydra dies of USR2 and HUP
OPEN_MPI_STOPS = (["SIGUSR1", "SIGUSR2", "SIGQUIT"], ["SIGUSR1", "SIGUSR2", "SIGTERM"])  # mpirun dies of QUIT


@pytest.mark.parametrize(
    ("manager", "sent", "seen"),
    [(name, *(OPEN_MPI_STOPS if "openmpi" in name else HYDRA_STOPS)) for name in MANAGER_JOBS],
)
def test_a_manager_job_gets_what_its_manager_can_pass_on_and_ds_helper_survives(
    manager: str, sent: List[str], seen: List[str], tmp_path: Path
) -> None:
    proc = start_watched(
        [DS_HELPER, *MANAGER_JOBS[manager], "job.ranks=2", "log.quiet=true", "catch_all.py"],
        clean_env(SIGNAL_DIR=str(tmp_path)),
    )
    wait_for(proc, "ready", 2)
    for name in sent[:-1]:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.5)  # a signal that is not passed on leaves nothing to wait for
        assert proc.poll() is None, f"ds-helper died of {name}"
    proc.send_signal(getattr(signal, sent[-1]))  # a stop the manager would die of, passed on as SIGTERM
    out, _ = proc.communicate(timeout=60)
    assert records(tmp_path) == {"0": seen, "1": seen}, out
    if "openmpi" not in manager:
        assert "ds-helper: SIGUSR2 is not passed on: the manager would die of it" in out


CODES_AFTER_CTRL_C = {"mpich": (0, 2, 11), "mpich5": (0, 2, 11), "impi": (130,), "openmpi": (1,), "openmpi5": (1,)}


@pytest.mark.parametrize("manager", list(MANAGER_JOBS))
def test_ctrl_z_stops_a_manager_jobs_ranks_and_fg_continues_them(shell: Shell, manager: str) -> None:
    # ds-helper stops the manager (it reads the terminal for rank 0) and what it started here. The exit code after
    # Ctrl-C is the manager's: MPICH's Hydra gives 0, 2 or 11 from run to run, also without ds-helper or Ctrl-Z.
    command = [DS_HELPER, *MANAGER_JOBS[manager], "job.ranks=2", "log.quiet=true", "sleeper.py", "ticking"]
    assert ctrl_z_then_fg(shell, command) in CODES_AFTER_CTRL_C[manager]


@pytest.mark.parametrize(("manager", "label"), [("mpich", "[{rank}] "), ("openmpi", "[1,{rank}]<stdout>:")])
def test_log_label_asks_the_manager_to_label_each_line(manager: str, label: str) -> None:
    result = ds(*MANAGER_JOBS[manager], "job.ranks=2", "log.quiet=true", "log.label=true", "show.py", timeout=120)
    assert result.returncode == 0, result.stderr
    for rank in (0, 1):
        assert any(
            line.startswith(label.format(rank=rank) + '{"RANK": "' + str(rank)) for line in result.stdout.splitlines()
        ), result.stdout


@pytest.mark.parametrize("manager", list(MANAGER_JOBS))
def test_job_timeout_ends_a_manager_job_with_124(manager: str) -> None:
    options = [*MANAGER_JOBS[manager], "job.ranks=2", "log.quiet=true", "job.timeout=2", "log.grace=2"]
    result = ds(*options, "sleeper.py", timeout=120)
    assert result.returncode == 124
    assert "ds-helper: job.timeout=2: " in result.stderr


@pytest.mark.parametrize("manager", list(MANAGER_JOBS))
def test_restarts_through_a_manager_reach_the_ranks_with_the_attempt_and_a_fresh_port(
    manager: str, tmp_path: Path
) -> None:
    env = clean_env(SIGNAL_DIR=str(tmp_path))
    result = ds(*MANAGER_JOBS[manager], "job.ranks=2", "log.quiet=true", "job.restarts=1", "fail_once.py", env=env)
    assert_ran_twice(result, os.path.basename(MANAGER_JOBS[manager][1].removeprefix("job.program=")))


def assert_ran_twice(result: subprocess.CompletedProcess[str], program: str) -> None:
    """fail_once.py's 2 ranks ran in attempt 0, then, after ``program`` failed, in attempt 1 on another port."""
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)  # Hydra may join two ranks' lines
    assert sorted((r["TORCHELASTIC_RESTART_COUNT"], r["RANK"]) for r in rows) == [
        ("0", "0"),
        ("0", "1"),
        ("1", "0"),
        ("1", "1"),
    ]
    assert len({r["MASTER_PORT"] for r in rows}) == 2
    assert "ds-helper: job failed: " in result.stderr
    assert f"ds-helper: restarting the job (restart 1 of job.restarts=1): {program} exited with code " in result.stderr


def test_what_open_mpi_leaves_behind_ends_with_the_job() -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *MANAGER_JOBS["openmpi"], "job.ranks=2", "log.quiet=true", "log.grace=5"]
    proc = start_watched([*command, "with_children.py", token], clean_env(FAIL_RANK="1", EXIT_CODE="3"))
    try:
        proc.communicate(timeout=60)
        assert proc.returncode == 3
        assert alive_with(token) == []  # mpirun alone leaves rank 1's child and grandchild (test_manager_behaviour)
    finally:
        for pid in alive_with(token):
            os.kill(pid, signal.SIGKILL)


def test_with_log_dir_the_failing_ranks_last_lines_come_from_its_file(tmp_path: Path) -> None:
    result = ds("job.ranks=3", "log.quiet=true", f"log.dir={tmp_path}", "divide_by_zero.py", timeout=120)
    assert result.returncode == 1
    last = result.stderr.rstrip().splitlines()
    assert f"rank 1 failed first; its last lines on stderr ({tmp_path}/rank-1.err):" in result.stderr
    assert "ZeroDivisionError: division by zero" in last[-2], last


@pytest.mark.parametrize("program", [OPENMPI, "/opt/mpi-venvs/openmpi5/bin/mpirun"])
def test_the_rank_open_mpi_reports_first_is_named_in_the_last_line(program: str) -> None:
    options = ["launcher=openmpi", f"job.program={program}", "job.manager_args=[--allow-run-as-root,--oversubscribe]"]
    result = ds(*options, "job.ranks=3", "log.quiet=true", "divide_by_zero.py", timeout=120)
    assert result.returncode == 1
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("ds-helper: job failed: rank 1 (exited with code 1, as the manager reports it); "), last


HYDRA_JOBS = ["mpich", "mpich5", "impi"]


@pytest.mark.parametrize("manager", HYDRA_JOBS)
def test_the_rank_hydra_reports_failed_is_named_in_the_last_line_and_its_report_stays_off_the_output(
    manager: str,
) -> None:
    # Hydra lets the other ranks run on after a non-zero exit: they end by themselves after a second.
    options = [*MANAGER_JOBS[manager], "job.ranks=3", "log.quiet=true"]
    result = ds(*options, "divide_by_zero.py", env=clean_env(OTHERS_WAIT="1"), timeout=120)
    assert result.returncode == 1
    assert "Exit codes" not in result.stdout  # -print-all-exitcodes' line, read by ds-helper (mpich.yaml)
    last = result.stderr.rstrip().splitlines()
    expected = f"ds-helper: job failed: rank 1 (host {socket.gethostname()}, exited with code 1, as the manager "
    assert last[-1].startswith(expected + "reports it); mpiexec."), last
    assert "ZeroDivisionError: division by zero" in last[-2], last


@pytest.mark.parametrize("manager", HYDRA_JOBS)
def test_of_ranks_failing_under_hydra_the_lowest_is_named_and_the_others_counted(manager: str) -> None:
    # Rank 1 exits with 3, then rank 2 dies of SIGSEGV; MPICH's Hydra SIGKILLs the rest, which is no failure of theirs.
    options = [*MANAGER_JOBS[manager], "job.ranks=4", "log.quiet=true"]
    result = ds(*options, "fail_two_ways.py", env=clean_env(OTHERS_WAIT="3"), timeout=120)
    assert result.returncode != 0
    last = result.stderr.rstrip().splitlines()[-1]
    host = socket.gethostname()
    expected = f"ds-helper: job failed: rank 1 (host {host}, exited with code 3, as the manager reports it; 1 more rank"
    assert last.startswith(expected + " failed); "), last


def test_under_hydra_with_log_dir_the_named_ranks_own_file_gives_its_last_lines(tmp_path: Path) -> None:
    options = [*MANAGER_JOBS["mpich"], "job.ranks=3", "log.quiet=true", f"log.dir={tmp_path}"]
    result = ds(*options, "divide_by_zero.py", env=clean_env(OTHERS_WAIT="1"), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.rstrip().splitlines()
    assert lines[-7] == f"ds-helper: rank 1 failed; its last lines on stderr ({tmp_path}/rank-1.err):", lines
    assert lines[-2] == "ds-helper:   | ZeroDivisionError: division by zero", lines


@pytest.mark.slurm
def test_hydra_on_two_nodes_reports_each_hosts_ranks_and_the_failed_one_is_named_with_its_host(slurm_cluster) -> None:
    # A real two-node MPICH job: Hydra starts its proxies through Slurm (-bootstrap slurm) inside an allocation of
    # the loopback cluster's two nodes, and reports each host's codes on a line of its own.
    command = [*MANAGER_JOBS["mpich"], "job.hosts=[node1,node2]", "job.ranks_per_node=2", "log.quiet=true"]
    command += ["job.manager_args=[-bootstrap,slurm]", "divide_by_zero.py"]
    env = slurm_cluster.env(clean_env(FAIL_RANK="3", OTHERS_WAIT="1"))
    result = run(["salloc", "-N2", "--overcommit", DS_HELPER, *command], env=env, timeout=180)
    assert "Exit codes" not in result.stdout and "[node2]" not in result.stdout, result.stdout
    last = result.stderr.rstrip().splitlines()
    expected = "ds-helper: job failed: rank 3 (host node2, exited with code 1, as the manager reports it); mpiexec."
    assert any(line.startswith(expected) for line in last[-3:]), last  # salloc adds a line of its own


@pytest.mark.slurm
def test_the_task_srun_reports_failed_is_named_in_the_last_line_and_ends_the_step(slurm_cluster) -> None:
    # Two nodes of the loopback cluster; rank 1 (node1) raises, the other three would sleep for 120 s.
    started = time.monotonic()
    result = ds(
        "launcher=slurm",
        "job.nodes=2",
        "job.ranks_per_node=2",
        "log.quiet=true",
        "divide_by_zero.py",
        env=slurm_cluster.env(clean_env()),
        timeout=180,
    )
    assert time.monotonic() - started < 60  # ds-helper read srun's line on the failed task and ended the step
    assert result.returncode != 0 and "ZeroDivisionError: division by zero" in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    expected = "ds-helper: job failed: rank 1 (host node1, exited with code 1, as the manager reports it); srun "
    assert last.startswith(expected), last


@pytest.mark.slurm
def test_log_label_through_srun_puts_each_ranks_number_in_front_of_its_lines(slurm_cluster) -> None:
    result = ds(
        "launcher=slurm",
        "job.nodes=2",
        "job.ranks_per_node=1",
        "log.label=true",
        "log.quiet=true",
        "show.py",
        env=slurm_cluster.env(clean_env()),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    labelled = sorted(line.split(": ", 1) for line in result.stdout.splitlines())
    assert [(label, json.loads(row)["RANK"]) for label, row in labelled] == [("0", "0"), ("1", "1")]


# --- Slurm: srun on the two-node loopback cluster (tests/slurm/README.md) ---------------------------------------

SLURM_JOB = ["launcher=slurm", "job.nodes=2", "job.ranks_per_node=2"]  # ranks 0, 1 on node1; 2, 3 on node2
SRUN_PASSES = {"SIGUSR1": "SIGUSR1", "SIGUSR2": "SIGUSR2"}  # and every stop as SIGINT (conf/launcher/slurm.yaml)


def _slurm_job_of(token: str) -> str:
    """The Slurm job id of the ranks marked with ``token``, from a rank's environment (ds-helper's has none)."""
    for pid in alive_with(token):
        found = re.search(rb"(?:^|\0)SLURM_JOB_ID=(\d+)", Path(f"/proc/{pid}/environ").read_bytes())
        if found:
            return found.group(1).decode()
    raise AssertionError(f"no rank marked {token} runs")


def _slurm_job_holds_its_nodes(slurm_cluster, job: str) -> bool:
    """True if the job is still running or pending 20 s on (an srun killed by SIGKILL leaves it running)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shown = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,S", "-j", job, "-o", "%T"],
            env=slurm_cluster.env(clean_env()),
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not shown:
            return False
        time.sleep(0.2)
    return True


def _end_slurm_leftovers(slurm_cluster, token: str, job: str) -> None:
    """Cancel the job (its allocation is freed even when srun then dies of SIGKILL), then kill what is left
    marked with ``token``."""
    if job:
        subprocess.run(["scancel", job], env=slurm_cluster.env(clean_env()), check=False)
    for pid in alive_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slurm
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"])
def test_under_srun_every_rank_on_both_nodes_gets_the_notices_and_a_stop_as_sigint(
    stop: str, slurm_cluster, tmp_path: Path
) -> None:
    # srun itself SIGKILLs its tasks on TERM, HUP and QUIT, and prints status on a first INT: slurm.yaml's
    # start.signals and --disable-status make every stop a SIGINT the ranks can catch. catch_all.py carries on
    # after it, so after log.grace srun gets SIGTERM (not SIGKILL, which leaves the tasks and the allocation).
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *SLURM_JOB, "log.quiet=true", "log.grace=2", "catch_all.py", token]
    proc = start_watched(command, slurm_cluster.env(clean_env(SIGNAL_DIR=str(tmp_path))))
    job = ""
    try:
        wait_for(proc, "ready", 4)
        job = _slurm_job_of(token)
        seen: List[str] = []
        for name in (*SRUN_PASSES, stop):
            proc.send_signal(getattr(signal, name))
            seen.append(SRUN_PASSES.get(name, "SIGINT"))
            deadline = time.monotonic() + 30
            while records(tmp_path) != {str(r): seen for r in range(4)} and time.monotonic() < deadline:
                time.sleep(0.05)
            assert records(tmp_path) == {str(r): seen for r in range(4)}, name
            assert proc.poll() is None or name == stop, f"ds-helper died of {name}"  # a stop ends it after log.grace
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGKILL, out  # srun's, after it ended the step for ds-helper
        assert alive_with(token) == []
        assert not _slurm_job_holds_its_nodes(slurm_cluster, job)
    finally:
        _end_slurm_leftovers(slurm_cluster, token, job)


@pytest.mark.slurm
def test_under_srun_a_notice_reaches_the_ranks_children_too(slurm_cluster, tmp_path: Path) -> None:
    # srun signals every process of the step: a child without a handler dies of SIGUSR1 (a local job's notice
    # goes to the rank's own process only).
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *SLURM_JOB, "log.quiet=true", "log.grace=2", "catch_all.py", token]
    proc = start_watched(command, slurm_cluster.env(clean_env(SIGNAL_DIR=str(tmp_path), WITH_CHILD="1")))
    job = ""
    try:
        wait_for(proc, "ready", 4)
        job = _slurm_job_of(token)
        children = [pid for pid in alive_with(token) if b"time.sleep" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(children) == 4
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while records(tmp_path) != {str(r): ["SIGUSR1"] for r in range(4)} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert records(tmp_path) == {str(r): ["SIGUSR1"] for r in range(4)}
        while set(children) & set(alive_with(token)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(children) & set(alive_with(token)) == set()
        assert proc.poll() is None
    finally:
        _end_slurm_leftovers(slurm_cluster, token, job)
        proc.communicate(timeout=60)


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("saving", "code"),
    [
        ({"SAVED_EXIT": "0"}, 0),
        # Rank 0 saves for 3 s, the others for 0.1 s and exit 130: after the user's stop that is no failure
        # (srun's --kill-on-bad-exit would have SIGKILLed rank 0 mid-save; slurm.yaml).
        ({"SAVE_SECONDS": "3,0.1"}, 130),
    ],
)
def test_under_srun_sigterm_lets_every_rank_save(
    slurm_cluster, tmp_path: Path, saving: Dict[str, str], code: int
) -> None:
    env = slurm_cluster.env(clean_env(SIGNAL_DIR=str(tmp_path), **saving))
    proc = start_watched([DS_HELPER, *SLURM_JOB, "log.quiet=true", "checkpoint.py"], env)
    wait_for(proc, "ready", 4)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert records(tmp_path, ".signals") == {str(r): ["SIGINT"] for r in range(4)}
    assert records(tmp_path, ".saved") == {str(r): ["saved"] for r in range(4)}


@pytest.mark.slurm
def test_job_timeout_ends_a_slurm_job_with_124_and_nothing_left_on_either_node(slurm_cluster, tmp_path: Path) -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *SLURM_JOB, "log.quiet=true", "job.timeout=4", "log.grace=1", "catch_all.py", token]
    proc = start_watched(command, slurm_cluster.env(clean_env(SIGNAL_DIR=str(tmp_path))))
    job = ""
    try:
        wait_for(proc, "ready", 4)
        job = _slurm_job_of(token)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 124, out
        assert "ds-helper: job.timeout=4: " in out
        assert records(tmp_path) == {str(r): ["SIGINT"] for r in range(4)}  # the stop first, then srun's SIGKILL
        assert alive_with(token) == []
        assert not _slurm_job_holds_its_nodes(slurm_cluster, job)
    finally:
        _end_slurm_leftovers(slurm_cluster, token, job)


@pytest.mark.slurm
def test_restarts_under_srun_start_the_step_again_with_the_attempt_and_a_fresh_port(
    slurm_cluster, tmp_path: Path
) -> None:
    env = slurm_cluster.env(clean_env(SIGNAL_DIR=str(tmp_path)))
    options = ["launcher=slurm", "job.nodes=2", "job.ranks_per_node=1", "log.quiet=true", "job.restarts=1"]
    assert_ran_twice(ds(*options, "fail_once.py", env=env, timeout=180), "srun")


@pytest.mark.slurm
def test_under_srun_a_stop_ends_every_ranks_children_on_both_nodes(slurm_cluster) -> None:
    # srun passes a signal to every process of the step (proctrack), as a terminal to a process group.
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *SLURM_JOB, "log.quiet=true", "log.grace=5", "with_children.py", token]
    proc = start_watched(command, slurm_cluster.env(clean_env()))
    job = ""
    try:
        wait_for(proc, "ready", 4)
        job = _slurm_job_of(token)
        assert len(alive_with(token)) == 4 * 3 + 1  # each rank, its child and grandchild; ds-helper
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGINT  # every process died of the SIGINT
        assert alive_with(token) == []
    finally:
        _end_slurm_leftovers(slurm_cluster, token, job)


@pytest.mark.slurm
def test_under_srun_a_failed_ranks_children_outlive_the_step_with_proctrack_linuxproc(slurm_cluster) -> None:
    # Rank 1 exits 3: its child, re-parented to init, is no longer found by the cluster's proctrack/linuxproc
    # (slurm.conf(5), ProctrackType: proctrack/cgroup tracks them); the other ranks' children end with the step.
    # Here they do not hold rank 1's output: when they do, slurmstepd waits 60 s for it before giving up.
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    command = [DS_HELPER, *SLURM_JOB, "log.quiet=true", "log.grace=5", "with_children.py", token]
    proc = start_watched(command, slurm_cluster.env(clean_env(FAIL_RANK="1", EXIT_CODE="3", QUIET_CHILDREN="1")))
    try:
        out, _ = proc.communicate(timeout=180)  # rank 1 may end before the others are ready: no wait for them
        assert proc.returncode == 128 + signal.SIGINT, out  # srun's: ds-helper stopped the others with SIGINT
        assert "rank 1 (host node1, exited with code 3, as the manager reports it)" in out
        time.sleep(0.5)
        parents = {pid: process_parent(pid) for pid in alive_with(token)}
        assert len(parents) == 2, parents  # rank 1's child and grandchild
        child = next(pid for pid, parent in parents.items() if parent not in parents)
        assert Path(f"/proc/{parents[child]}/comm").read_text().strip() != "slurmstepd"  # re-parented outside
    finally:
        _end_slurm_leftovers(slurm_cluster, token, "")


def test_log_show_picks_the_ranks_on_the_terminal_while_log_dir_keeps_all(tmp_path: Path) -> None:
    result = ds(
        "job.ranks=3",
        "log.quiet=true",
        "log.show=[0,2]",
        f"log.dir={tmp_path}",
        "many_lines.py",
        env=clean_env(LINES="3"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # log.dir took every rank's output
    assert [len((tmp_path / f"rank-{r}.out").read_text().splitlines()) for r in range(3)] == [3, 3, 3]
    result = ds("job.ranks=3", "log.quiet=true", "log.show=[0,2]", "many_lines.py", env=clean_env(LINES="3", WIDTH="5"))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["00000"] * 3 + ["22222"] * 3  # rank 1 ran, unseen
