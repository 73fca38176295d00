"""The tee supervisor (``log.tee=true``): the one mode in which ds-helper keeps a process next to the script.

It copies the script's stdout/stderr to the manager (each line prefixed) and to the rank's log files as the
bytes arrive; only a line's start waits up to 0.25 s for its end, so ranks' lines stay whole at the manager,
while a ``\\r`` progress bar still shows as it is drawn. Time and memory go per read, never per line (a 40 MB
line is copied in 64 KiB pieces). Everything else is about changing nothing the script or the
process manager sees:

* in a terminal's foreground job, the script stays in that job (the supervisor's process group): it reads stdin,
  and Ctrl-C / Ctrl-Z / hangup reach it from the terminal as they would alone; the supervisor stops and
  continues with it, and leaves those signals to the terminal;
* without one (a batch job, a manager's rank), the script gets a process group of its own, and every
  catchable signal the supervisor receives goes to that group (grandchildren included);
* a signal ignored when the supervisor started (``nohup``'s SIGHUP) stays ignored, by both;
* after a forwarded SIGTERM, SIGINT, SIGHUP or SIGQUIT the script has ``grace`` seconds, then SIGKILL;
* the script gets SIGKILL if the supervisor dies, even by SIGKILL (``PR_SET_PDEATHSIG``);
* a stream the manager no longer takes (closed, full) is dropped without a word; with no log file to keep,
  the script's end of it is closed too, so the script sees the broken pipe it would have seen alone;
* output the script's own children write after it exits still arrives: a copier process carries on
  until the last writer closes, while the supervisor exits with the script's exit code (or 128 + signal).

Started by ``ds_helper.rank.become`` as ``python -c <import ds_helper.rank.tee, run main()> FD`` in a fresh
interpreter, with nothing of the user's folders on ``sys.path``, so it holds no Hydra and little memory. The
JSON spec is read from the inherited descriptor FD (a memory file), so the script's argument list has no limit
beyond its own. Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import sys
import time
from typing import Dict, List, Optional, Union

from ds_helper.rank.inherit import PYTHON_IGNORED, fork_exec, hold_closed_fds

Buffer = Union[bytes, memoryview]

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
"""The stop signals: passed on, then ``grace`` seconds, then SIGKILL (here, and in the job's supervisor)."""
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
# What a terminal sends to its whole foreground job: the script gets these from the terminal itself.
_FROM_TERMINAL = {signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGWINCH}
_JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT}


def _has_terminal() -> bool:
    """True when this process is in its terminal's foreground job (a shell started it there), False in a batch
    job or a manager's rank: a manager that groups its ranks apart then still has its signals forwarded."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(tty)


# A line's start waits this long for its end, so lines of different ranks stay whole at the manager; then it
# is shown as it is (a progress bar), and so is any part longer than HOLD_BYTES (memory per read, not per line).
HOLD_SECONDS = 0.25
HOLD_BYTES = 65536


class LineCopier:
    """A stream copied to ``target`` in whole lines, ``label`` in front of each line: only a line's start waits, up
    to HOLD_SECONDS for its end (then it shows as it is: a progress bar), and at most HOLD_BYTES of it. Used by
    the tee here and by the job's supervisor (job/supervisor.py), which adds what it keeps of a stream."""

    def __init__(self, target: Optional[int], label: bytes) -> None:
        self.target = target  # None: nothing takes the bytes (any more)
        self.label = label
        self.newline_label = b"\n" + label
        self.at_line_start = True
        self.held = b""  # the start of a line not ended yet
        self.held_since = 0.0

    def copy(self, data: bytes, now: float) -> None:
        out = self.held + data
        end = out.rfind(b"\n") + 1
        if len(out) - end > HOLD_BYTES:
            end = len(out)
        if not self.held or end:
            self.held_since = now
        self.held = out[end:]
        self._send(self._shown(out[:end]))

    def flush_held(self, now: float) -> None:
        """Show a line's start that has waited long enough for its end."""
        if self.held and now - self.held_since >= HOLD_SECONDS and not self._waits(self.held):
            held, self.held = self.held, b""
            self._send(held)

    def finish(self) -> None:
        """At the end of the stream: a labelled last line gets its newline, so the next one starts afresh."""
        held, self.held = self.held, b""
        self._send(held)
        if self.label and not self.at_line_start:
            self._send(b"\n")

    def _shown(self, lines: bytes) -> bytes:
        """Of whole lines, what is shown (all of them; the supervisor keeps a manager's report apart)."""
        return lines

    def _waits(self, held: bytes) -> bool:
        """A line's start that waits for its end however long it takes (none here)."""
        return False

    def _send(self, data: bytes) -> None:
        if not data or self.target is None:
            return
        parts: List[Buffer] = self._labelled(data) if self.label else [data]
        if not _write_parts(self.target, parts):
            self.target = None

    def _labelled(self, data: bytes) -> List[Buffer]:
        """``data`` with the label at each line start, in one pass and no copy beyond the replace."""
        body = data.replace(b"\n", self.newline_label)
        ends_line = data.endswith(b"\n")  # then the body ends with a label, for a line not begun: left out
        shown = memoryview(body)[: len(body) - len(self.label)] if ends_line else body
        parts: List[Buffer] = [self.label, shown] if self.at_line_start else [shown]
        self.at_line_start = ends_line
        return parts


def _write_parts(fd: int, parts: List[Buffer]) -> bool:
    """``parts`` written in one system call when it takes them all (the usual case), else the rest piece-wise."""
    if len(parts) == 1:
        return write_all(fd, parts[0])
    try:
        done = os.writev(fd, parts)
    except (BlockingIOError, InterruptedError):
        done = 0
    except OSError:
        return False
    return write_all(fd, b"".join(parts)[done:]) if done < sum(map(len, parts)) else True


class _Stream(LineCopier):
    """One of the script's output streams, copied to the manager (labelled lines) and to the log file."""

    def __init__(self, target: int, log_path: Optional[str], prefix: bytes) -> None:
        super().__init__(target, prefix)
        # The file is new and empty: rank/logs.py created it (a log is never truncated).
        self.log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW) if log_path else None

    def feed(self, data: bytes) -> None:
        if self.log is not None:
            write_all(self.log, data)
        if self.target is not None:
            self.copy(data, time.monotonic())

    @property
    def wanted(self) -> bool:
        """False when nothing takes the bytes any more: the script should see its pipe broken."""
        return self.target is not None or self.log is not None

    def close(self) -> None:
        self.finish()
        self.release()

    def release(self) -> None:
        """Let go of the log file, writing nothing (another process carries on with this stream)."""
        if self.log is not None:
            os.close(self.log)
            self.log = None


def write_all(fd: int, data: Buffer) -> bool:
    """Write everything; False when the descriptor stopped taking bytes (reader gone, disk full, closed). A
    non-blocking descriptor (one inherited so) is waited for, not given up on."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return False
    return True


def _copy(selector: selectors.BaseSelector, streams: Dict[int, _Stream], timeout: Optional[float]) -> bool:
    """One round of copying; False when nothing was ready within ``timeout``."""
    if timeout is None or timeout > HOLD_SECONDS:
        timeout = HOLD_SECONDS if any(stream.held for stream in streams.values()) else timeout
    ready = selector.select(timeout)
    for key, _ in ready:
        fd = int(key.fd)
        data = os.read(fd, 65536)
        stream = streams[fd]
        if data:
            stream.feed(data)
        if not data or not stream.wanted:
            selector.unregister(fd)
            os.close(fd)  # EOF, or nobody takes the bytes: the writer gets EPIPE as it would alone
            streams.pop(fd).close()
    now = time.monotonic()
    for stream in streams.values():
        stream.flush_held(now)
    return bool(ready)


def _carry_on(selector: selectors.BaseSelector, streams: Dict[int, _Stream], handled: List[int]) -> None:
    """The script has exited but its children still hold its output: copy in a process of their lifetime."""
    if os.fork() != 0:
        for fd, stream in streams.items():
            os.close(fd)
            stream.release()
        return
    for signum in handled:
        signal.signal(signum, signal.SIG_DFL)
    while streams:
        _copy(selector, streams, None)
    os._exit(0)


def supervise(argv: List[str], out: Optional[str], err: Optional[str], prefix: str, grace: float) -> int:
    terminal = _has_terminal()
    inherited_ignored = {
        sig for sig in signal.valid_signals() if sig not in PYTHON_IGNORED and signal.getsignal(sig) == signal.SIG_IGN
    }
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    child = fork_exec(argv, out_w, err_w, detach="" if terminal else "group")  # a group: signals reach its children
    os.close(out_w)
    os.close(err_w)
    kill_at: List[float] = []

    def send(signum: int) -> None:
        try:
            if terminal:
                os.kill(child, signum)
            else:
                os.killpg(child, signum)
        except ProcessLookupError:
            pass

    def forward(signum: int, _frame: object) -> None:
        send(signum)
        if signum in STOPS and not kill_at:
            kill_at.append(time.monotonic() + grace)

    handled: List[int] = []
    for sig in signal.valid_signals():
        if sig in _NOT_FORWARDED or sig in inherited_ignored or (terminal and sig in _JOB_CONTROL):
            continue  # job control: the supervisor stops and continues with the script, by default
        try:
            signal.signal(sig, signal.SIG_IGN if terminal and sig in _FROM_TERMINAL else forward)
        except (OSError, ValueError):
            continue  # not catchable here
        handled.append(sig)

    streams: Dict[int, _Stream] = {
        out_r: _Stream(1, out, prefix.encode()),
        err_r: _Stream(2, err, prefix.encode()),
    }
    selector = selectors.DefaultSelector()
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    status: Optional[int] = None
    while status is None:
        # A short timeout, not None: a signal handler that just armed the grace deadline must be noticed
        # even if the script prints nothing (select is retried, not returned, after a handler runs).
        if streams:
            _copy(selector, streams, 0.2)
        else:
            time.sleep(0.2)
        done, status_now = os.waitpid(child, os.WNOHANG)
        if done:
            status = status_now
        elif kill_at and time.monotonic() >= kill_at[0]:
            send(signal.SIGKILL)
            kill_at[:] = [float("inf")]
    while streams and _copy(selector, streams, 0.0):
        pass  # what the script wrote before it exited
    if streams:
        _carry_on(selector, streams, handled)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    hold_closed_fds()  # a closed stdout must not become one of our pipes
    spec_fd = int(sys.argv[1])
    with open(spec_fd, "rb") as spec_file:
        spec = json.loads(spec_file.read())
    return supervise(spec["argv"], spec.get("out"), spec.get("err"), spec["prefix"], float(spec["grace"]))


if __name__ == "__main__":
    sys.exit(main())
