"""Process lifecycle under real managers, compared with a bare ``python script`` under the same manager."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    DS_HELPER,
    MPICH,
    OPENMPI,
    SCRIPTS,
    alive_with,
    clean_env,
    ds,
    gone_after_kill_9,
    mpich,
    openmpi,
    start_watched,
    wait_for,
)

MANAGERS = {"mpich": [MPICH, "-n", "2"], "openmpi": [OPENMPI, "--allow-run-as-root", "--bind-to", "none", "-n", "2"]}
RUNNERS = {"mpich": mpich, "openmpi": openmpi}
PYTHON = ["python3", "-u"]


@pytest.mark.mpi
@pytest.mark.parametrize("manager", MANAGERS)
def test_a_rank_killed_by_a_signal_is_reported_as_for_bare_python(manager: str) -> None:
    bare = RUNNERS[manager](2, *PYTHON, "kill_self.py", "KILL")
    ours = RUNNERS[manager](2, DS_HELPER, "kill_self.py", "KILL")
    assert ours.returncode == bare.returncode != 0
    marker = "signal 9"
    assert marker in bare.stdout + bare.stderr and marker in ours.stdout + ours.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("manager", MANAGERS)
def test_sigterm_to_the_manager_reaches_every_ranks_handler(manager: str, tmp_path: Path) -> None:
    proc = start_watched(
        [*MANAGERS[manager], DS_HELPER, "log.quiet=true", "on_sigterm.py"], env=clean_env(SIGNAL_DIR=str(tmp_path))
    )
    wait_for(proc, "ready", 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    records = [p.read_text() for p in tmp_path.iterdir()]
    assert records == [f"got signal {int(signal.SIGTERM)}\n"] * 2


def test_sigint_ends_the_script_exactly_as_it_ends_bare_python() -> None:
    codes = []
    for argv in ([*PYTHON, "sleeper.py"], [DS_HELPER, "log.quiet=true", "sleeper.py"]):
        proc = start_watched(argv)
        wait_for(proc, "ready", 1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        codes.append((proc.returncode, "KeyboardInterrupt" in out))
    assert codes[0] == codes[1] == (-signal.SIGINT, True)


@pytest.mark.mpi
@pytest.mark.parametrize("manager", MANAGERS)
def test_kill_9_of_the_job_leaves_no_process_behind(manager: str) -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    proc = start_watched([*MANAGERS[manager], DS_HELPER, "log.quiet=true", "sleeper.py", token])
    wait_for(proc, "ready", 2)
    assert len(alive_with(token)) >= 2
    assert gone_after_kill_9(proc, token) == []


@pytest.mark.mpi
@pytest.mark.parametrize("manager", MANAGERS)
def test_stdin_stdout_and_stderr_behave_as_for_bare_python(manager: str) -> None:
    argv = [*MANAGERS[manager][:-1], "1"]
    results = [
        subprocess.run(
            [*argv, *cmd, "echo_io.py"],
            cwd=SCRIPTS,
            env=clean_env(),
            input="hello\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        for cmd in (PYTHON, [DS_HELPER, "log.quiet=true"])
    ]
    assert [(r.returncode, r.stdout, r.stderr) for r in results][0] == [
        (r.returncode, r.stdout, r.stderr) for r in results
    ][1]
    assert results[1].stdout == "stdin: hello\n" and "to stderr" in results[1].stderr


def test_inherited_descriptors_stay_open_for_the_script() -> None:
    read, write = os.pipe()
    try:
        result = subprocess.run(
            [DS_HELPER, "log.quiet=true", "echo_io.py"],
            cwd=SCRIPTS,
            input="x\n",
            env=clean_env(WRITE_FD=str(write)),
            pass_fds=(write,),
            capture_output=True,
            text=True,
            timeout=60,
        )
        os.close(write)
        assert result.returncode == 0, result.stderr
        assert os.read(read, 1000) == b"through an inherited descriptor\n"
    finally:
        os.close(read)


# --- per-rank logs ------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_log_dir_sends_each_ranks_output_to_its_files(tmp_path: Path) -> None:
    result = mpich(2, DS_HELPER, f"log.dir={tmp_path}/logs", "echo_io.py", "--no-stdin")
    assert result.returncode == 0 and "stdin" not in result.stdout
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["rank-0.err", "rank-0.out", "rank-1.err", "rank-1.out"]
    assert (logs / "rank-1.out").read_text() == "stdin: "
    assert (logs / "rank-1.err").read_text() == "to stderr\n"
    named = mpich(
        2,
        DS_HELPER,
        f"log.dir={tmp_path}/n",
        "log.out='out.{node_rank}.{local_rank}'",
        "log.err='e{rank}'",
        "echo_io.py",
        "--no-stdin",
    )
    assert named.returncode == 0
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == ["e0", "e1", "out.0.0", "out.0.1"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("log.out='{host}.out'", "bad placeholder 'host'"),
        ("log.out=../escape", "a file name inside log.dir"),
        ("log.err=a/b", "a file name inside log.dir"),
        ("log.dir=", "log.dir is empty"),
        ("log.grace=-1", "must not be negative"),
    ],
)
def test_log_mistakes(override: str, fragment: str, tmp_path: Path) -> None:
    result = ds(override, *([] if override.startswith("log.dir") else [f"log.dir={tmp_path}"]), "show.py")
    assert result.returncode == 2 and fragment in result.stderr and list(tmp_path.iterdir()) == []


# --- the tee supervisor ---------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_tee_prefixes_every_line_and_keeps_the_files(tmp_path: Path) -> None:
    result = mpich(2, DS_HELPER, "log.tee=true", f"log.dir={tmp_path}", "echo_io.py", "--no-stdin")
    assert result.returncode == 0
    assert sorted(result.stdout.splitlines()) == ["[0] stdin: ", "[1] stdin: "]
    assert "[1] to stderr" in result.stderr
    assert (tmp_path / "rank-1.err").read_text() == "to stderr\n"


def _supervised(script: str, *args: str) -> tuple[subprocess.Popen, int]:
    proc = start_watched([DS_HELPER, "log.quiet=true", "log.tee=true", "log.grace=1", "log.prefix=", script, *args])
    line = wait_for(proc, "ready", 1)
    return proc, int(line.split()[-1])


def test_tee_forwards_sigterm_and_exits_with_the_scripts_code() -> None:
    proc, script_pid = _supervised("on_sigterm.py")
    assert script_pid != proc.pid  # the one mode with a process next to the script
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "got signal 15" in out and proc.returncode == 7


def test_tee_escalates_to_sigkill_after_the_grace_period() -> None:
    proc, _ = _supervised("stubborn.py")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - start >= 0.9


def test_tee_script_dies_with_its_supervisor() -> None:
    proc, script_pid = _supervised("sleeper.py")
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{script_pid}").exists() and time.monotonic() < deadline:
        status = Path(f"/proc/{script_pid}/status").read_text() if Path(f"/proc/{script_pid}").exists() else ""
        if "State:\tZ" in status:
            break
        time.sleep(0.1)
    status = Path(f"/proc/{script_pid}/status").read_text() if Path(f"/proc/{script_pid}").exists() else ""
    assert status == "" or "State:\tZ" in status


def test_tee_reports_a_killed_script_as_128_plus_signal() -> None:
    result = ds("log.tee=true", "kill_self.py", "SEGV")
    assert result.returncode == 128 + signal.SIGSEGV
    assert ds("log.tee=true", "exit_with.py", "3").returncode == 3
