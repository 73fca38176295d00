"""The tee supervisor (``log.tee=true``): the one mode in which ds-helper keeps a process next to the script.

It copies the script's stdout/stderr line by line to the manager (with a rank prefix) and to the rank's log
files. Everything else is about never changing what the process manager sees:

* every catchable signal it receives goes to the script's process group (grandchildren included);
* after SIGTERM, SIGINT, SIGHUP or SIGQUIT the script has ``grace`` seconds, then the group gets SIGKILL;
* the script gets SIGKILL if the supervisor dies, even by SIGKILL (``PR_SET_PDEATHSIG``);
* the supervisor exits with the script's exit code, or 128 + the signal that killed it.

Started by ``ds_helper.run`` as ``python -c <import ds_helper.supervise, run main()> SPEC_JSON`` in a fresh
interpreter, with nothing of the user's folders on ``sys.path``, so it holds no Hydra and little memory.
Standard library only.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import time
from typing import Dict, List, Optional

PR_SET_PDEATHSIG = 1
_TERMINATING = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGKILL when the supervisor goes away."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(128 + signal.SIGKILL)


def _start(argv: List[str], out_w: int, err_w: int) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)  # its own group, so forwarded signals reach its children too
            _die_with_parent(parent)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.execv(argv[0], argv)
        except OSError as exc:
            os.write(2, f"ds-helper: error: cannot run {argv[0]}: {exc.strerror}\n".encode())
        os._exit(127)
    return pid


class _Stream:
    """One of the script's output streams: complete lines go to the manager (prefixed) and to the file."""

    def __init__(self, target: int, log_path: Optional[str], prefix: bytes) -> None:
        self.target = target
        self.prefix = prefix
        self.pending = b""
        self.log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if log_path else None

    def feed(self, data: bytes) -> None:
        if self.log is not None:
            os.write(self.log, data)
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        if lines:
            _write_all(self.target, b"".join(self.prefix + line + b"\n" for line in lines))

    def close(self) -> None:
        if self.pending:
            _write_all(self.target, self.prefix + self.pending + b"\n")
        if self.log is not None:
            os.close(self.log)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BrokenPipeError:
            return  # the manager stopped reading: keep the script running, keep the files


def supervise(argv: List[str], out: Optional[str], err: Optional[str], prefix: str, grace: float) -> int:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    child = _start(argv, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    kill_at: List[float] = []

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child, signum)
        except ProcessLookupError:
            pass
        if signum in _TERMINATING and not kill_at:
            kill_at.append(time.monotonic() + grace)

    for sig in signal.valid_signals():
        if sig not in _NOT_FORWARDED:
            try:
                signal.signal(sig, forward)
            except (OSError, ValueError):
                pass  # not catchable here

    streams: Dict[int, _Stream] = {
        out_r: _Stream(1, out, prefix.encode()),
        err_r: _Stream(2, err, prefix.encode()),
    }
    selector = selectors.DefaultSelector()
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    status: Optional[int] = None
    while streams:
        # A short timeout, not None: a signal handler that just armed the grace deadline must be noticed
        # even if the script prints nothing (select is retried, not returned, after a handler runs).
        ready = selector.select(0.0 if status is not None else 0.2)
        for key, _ in ready:
            fd = int(key.fd)
            data = os.read(fd, 65536)
            if data:
                streams[fd].feed(data)
            else:
                selector.unregister(fd)
                streams.pop(fd).close()
        if status is None:
            done, status_now = os.waitpid(child, os.WNOHANG)
            if done:
                status = status_now
        elif not ready:
            break  # the script is gone and its output drained; grandchildren may hold the pipes open
        if kill_at and time.monotonic() >= kill_at[0]:
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_at[:] = [float("inf")]
    for stream in streams.values():
        stream.close()
    if status is None:
        _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    spec = json.loads(sys.argv[1])
    return supervise(spec["argv"], spec.get("out"), spec.get("err"), spec["prefix"], float(spec["grace"]))


if __name__ == "__main__":
    sys.exit(main())
