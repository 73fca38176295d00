"""What the script inherits besides argv and env (signal state, standard streams), and the tee supervisor's
copying, each compared with what ``python SCRIPT`` (or the bare program) gets when started the same way."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
from conftest import DS_HELPER, SCRIPTS, clean_env, ds, json_lines, mpich

MODES = {"exec": [], "inprocess": ["run_mode=inprocess"], "tee": ["log.tee=true"]}
PROGRAM_MODES = {"exec": [], "tee": ["log.tee=true"]}  # no_python=true: inprocess does not apply


def _signal_state(status: str) -> Dict[str, int]:
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {name: int(fields[name], 16) for name in ("SigIgn", "SigBlk")}


def _like_nohup_with_a_blocked_signal() -> None:
    """What a user's shell may hand over: SIGHUP ignored (nohup) and, carelessly, SIGUSR1 blocked."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])


# --- signal state ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PROGRAM_MODES)
def test_a_program_starts_with_the_signal_state_a_shell_gives(mode: str) -> None:
    argv = [
        DS_HELPER,
        "log.quiet=true",
        "log.prefix=",
        *PROGRAM_MODES[mode],
        "no_python=true",
        "script=cat",
        "--",
        "/proc/self/status",
    ]
    result = subprocess.run(
        argv,
        env=clean_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=_like_nohup_with_a_blocked_signal,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # nohup's SIGHUP survives; Python's SIGPIPE/SIGXFSZ do not; nothing is blocked.
    assert _signal_state(result.stdout) == {"SigIgn": 1 << (signal.SIGHUP - 1), "SigBlk": 0}


def test_a_program_under_mpich_gets_the_signal_state_of_the_bare_program() -> None:
    def state(*command: str) -> Dict[str, int]:
        result = mpich(1, *command, "/proc/self/status", timeout=60)
        assert result.returncode == 0, result.stderr
        return _signal_state(result.stdout)

    assert state(DS_HELPER, "log.quiet=true", "no_python=true", "script=cat", "--") == state("cat")


@pytest.mark.parametrize("mode", PROGRAM_MODES)
def test_a_program_piped_into_head_ends_quietly(mode: str) -> None:
    proc = subprocess.Popen(
        [DS_HELPER, "log.quiet=true", *PROGRAM_MODES[mode], "no_python=true", "script=yes"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip().endswith(b"y")
    proc.stdout.close()  # what `| head -1` does next
    try:
        _, errors = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (-signal.SIGPIPE, 128 + signal.SIGPIPE)  # yes killed by SIGPIPE, as alone
    assert errors == b""


# --- closed and failing standard streams -----------------------------------------------------------------------------

STREAMS: Dict[str, Callable[[], Dict[str, object]]] = {
    "stdout closed": lambda: {"preexec_fn": lambda: os.close(1), "stderr": subprocess.PIPE},
    "stderr closed": lambda: {"preexec_fn": lambda: os.close(2), "stdout": subprocess.PIPE},
    "stdout full": lambda: {"stdout": open("/dev/full", "wb"), "stderr": subprocess.PIPE},  # noqa: SIM115
    "stderr full": lambda: {"stderr": open("/dev/full", "wb"), "stdout": subprocess.PIPE},  # noqa: SIM115
    "stdin closed": lambda: {"preexec_fn": lambda: os.close(0), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE},
}


def _run_with(argv: List[str], streams: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    options = STREAMS[streams]()  # a preexec_fn runs after the standard streams are set up
    return subprocess.run(argv, env=clean_env(), cwd=cwd, timeout=60, stdin=subprocess.DEVNULL, **options)  # type: ignore[call-overload]


@pytest.mark.parametrize("streams", STREAMS)
@pytest.mark.parametrize("mode", MODES)
def test_a_closed_or_failing_stream_never_stops_what_python_would_run(mode: str, streams: str, tmp_path: Path) -> None:
    script = str(SCRIPTS / "write_marker.py")
    bare = _run_with([sys.executable, "-u", script, str(tmp_path / "bare")], streams, tmp_path)
    ours = _run_with([DS_HELPER, *MODES[mode], script, str(tmp_path / "ours")], streams, tmp_path)
    assert (tmp_path / "bare").exists()
    assert (tmp_path / "ours").exists(), ours  # the script ran
    errors = (ours.stderr or b"").decode()
    assert "ds_helper" not in errors, errors  # the script's own error on a full disk is python's too, not ours
    if mode != "tee":  # the supervisor's pipe stands between the script and the stream
        assert ours.returncode == bare.returncode, (ours, bare)
    if streams == "stderr closed":  # ds-helper's own line never lands in the script's stdout
        assert b"ds-helper" not in (ours.stdout or b"")


@pytest.mark.parametrize("command", [["--dry-run", "show.py"], ["--help"], ["--cfg", "job", "show.py"]])
def test_output_to_a_full_disk_is_one_error_line(command: List[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [DS_HELPER, *command],
            env=clean_env(),
            cwd=SCRIPTS,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr == "ds-helper: error: cannot write the output: No space left on device\n"


# --- the tee supervisor ----------------------------------------------------------------------------------------------


def _read_until(fd: int, word: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while word not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the pty's other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _on_a_terminal(argv: List[str], env: Optional[Dict[str, str]] = None) -> tuple[subprocess.Popen, int]:
    """``argv`` as a session leader whose controlling terminal (and foreground job) is a fresh pty."""
    master, slave = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env or clean_env(),
        cwd=SCRIPTS,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    return proc, master


def test_tee_script_keeps_the_terminal_and_reads_it() -> None:
    proc, master = _on_a_terminal([DS_HELPER, "log.quiet=true", "log.tee=true", "terminal.py"])
    try:
        seen = _read_until(master, b"foreground")
        os.write(master, b"hello\n")
        seen += _read_until(master, b"got hello")
        assert b"foreground True" in seen and b"got hello" in seen, seen
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_tee_ctrl_z_stops_the_whole_job_in_a_job_control_shell() -> None:
    env = clean_env(PS1="$ ", TERM="dumb")
    shell, master = _on_a_terminal(["bash", "--norc", "--noprofile", "-i"], env=env)
    try:
        os.write(master, f"{DS_HELPER} log.quiet=true log.tee=true sleeper.py\n".encode())
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x1a")  # Ctrl-Z
        assert b"Stopped" in _read_until(master, b"Stopped", timeout=20)
        os.write(master, b"fg\n")
        time.sleep(0.5)
        os.write(master, b"\x03")  # Ctrl-C ends it through the terminal, as for python alone
        os.write(master, b"echo status=$?\n")
        assert b"status=130" in _read_until(master, b"status=1", timeout=20)
        os.write(master, b"exit\n")
        shell.wait(timeout=30)
    finally:
        shell.kill()
        shell.wait()
        os.close(master)


def test_tee_passes_an_argument_list_longer_than_one_exec_argument_may_be() -> None:
    args = [f"argument-{index:06d}" for index in range(15000)]  # ~250 KiB: over MAX_ARG_STRLEN as one item
    result = ds("log.quiet=true", "log.tee=true", "log.prefix=", "show.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json_lines(result.stdout)[0]["argv"] == args


def test_tee_output_without_a_newline_appears_as_it_is_written() -> None:
    proc = subprocess.Popen(
        [DS_HELPER, "log.quiet=true", "log.tee=true", "progress.py"],
        env=clean_env(),
        cwd=SCRIPTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        seen = _read_until(proc.stdout.fileno(), b"step 1/2")
        assert seen == b"[0] \rstep 1/2"  # before the script has written any newline
    finally:
        proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    assert rest == b"\rstep 2/2\n"


def test_tee_copies_a_40_mb_line_in_bounded_memory(tmp_path: Path) -> None:
    size = 40 * 2**20
    # A fresh process measures its children's peak RSS: the supervisor's (ds-helper execs into it) and the script's.
    code = (
        "import resource, subprocess, sys\n"
        "with open(sys.argv[2], 'wb') as out:\n"
        f"    code = subprocess.run([{DS_HELPER!r}, 'log.quiet=true', 'log.tee=true', 'long_line.py', sys.argv[1]],"
        " stdout=out, stdin=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = tmp_path / "out"
    measured = subprocess.run(
        [sys.executable, "-c", code, str(size), str(out)],
        env=clean_env(),
        cwd=SCRIPTS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    code_text, peak_kib = measured.stdout.split()
    assert code_text == "0", measured.stderr
    assert out.read_bytes() == b"[0] " + b"." * size + b"\n"
    assert int(peak_kib) < 64 * 1024  # the whole line held in memory (the old pending buffer) is over 80 MB


def test_tee_keeps_what_the_scripts_children_write_after_it_exits(tmp_path: Path) -> None:
    result = ds("log.quiet=true", "log.tee=true", f"log.dir={tmp_path}", "late_child.py", timeout=60)
    assert result.returncode == 0
    assert "[0] parent done\n" in result.stdout and "[0] written late by the child\n" in result.stdout
    assert (tmp_path / "rank-0.out").read_text() == "parent done\nwritten late by the child\n"


def test_tee_under_nohup_outlives_a_hangup() -> None:
    proc = subprocess.Popen(
        [DS_HELPER, "log.quiet=true", "log.tee=true", "log.grace=1", "sleeper.py"],
        env=clean_env(),
        cwd=SCRIPTS,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    try:
        assert b"ready" in _read_until(proc.stdout.fileno(), b"ready")
        proc.send_signal(signal.SIGHUP)  # ignored, as nohup asked: no grace period, no SIGKILL
        time.sleep(2.5)
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
