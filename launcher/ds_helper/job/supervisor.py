"""The supervisor of a job ds-helper starts: its processes, their signals, output, failures, restarts, time limit.

The starting ds-helper stays for the whole job and runs this loop (the ranks never do: their path is unchanged).
It supervises *members*: the N ranks of a local job, or the one manager process (``mpiexec``, ``mpirun``,
``srun``) of a job started through a manager. What users expect of it, each point tested in
tests/test_supervisor.py with real processes:

* **Signals as if each rank ran alone at the terminal.** Every member starts in a session of its own, so a
  terminal's Ctrl-C (or Ctrl-\\, hangup) reaches ds-helper alone, which sends it once to each member: a local
  rank's whole process group (its children too, as a terminal would), a manager's own process (it forwards to
  its ranks itself). SIGUSR1/SIGUSR2 (preemption notices of Slurm ``--signal``, LSF, PBS) go to the member's
  process only: a DataLoader worker would die of them. ds-helper never dies of a signal it can forward.
* **Stop, then grace.** After a stop signal from the user (INT, TERM, HUP, QUIT) the members have ``grace``
  seconds to finish (a save), then SIGKILL; a rank exiting because of that signal is no failure.
* **A failure stops the job.** The first member to fail is the root cause; the others get SIGTERM, then SIGKILL
  after ``grace``. The job's last lines name it: rank, host, exit code or signal by name, last stderr lines.
* **Ctrl-Z / fg.** A member alone in its session is an orphaned process group, which the kernel does not stop
  for SIGTSTP: ds-helper stops the ranks with SIGSTOP (a manager with every process it started on this
  machine), then itself, and continues them on SIGCONT.
* **Nothing left behind.** ds-helper is the child subreaper of everything it starts: a rank's child or daemon
  whose parent exits is re-parented here, not to init. When the job ends, every process group and every such
  orphan gets SIGTERM, then SIGKILL after ``grace``.
* **Whole lines.** Each member's stdout and stderr reach ds-helper through pipes (stdout through a pseudo
  terminal when ds-helper's own stdout is one, so the script line-buffers and colours as it would alone) and
  are copied in whole lines, optionally labelled; only a line's start waits up to 0.25 s for its end.

Standard library only, and none of it imported by a rank.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional

from ds_helper.job.reports import (
    RankEnd,
    ReportLines,
    describe_status,
    every_rank,
    first_failure,
    report_lines,
    root_cause,
    signal_name,
)
from ds_helper.rank.errors import line
from ds_helper.rank.inherit import fork_exec, libc_function
from ds_helper.rank.plan import ExitCodesSpec
from ds_helper.rank.tee import HOLD_SECONDS, STOPS, LineCopier, write_all

if TYPE_CHECKING:
    import selectors

NOTICES = (signal.SIGUSR1, signal.SIGUSR2)
"""Forwarded to each member's own process, nothing else happens."""
_SUSPENDS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
_OTHERS = (signal.SIGCHLD, signal.SIGCONT)
TIMEOUT_CODE = 124  # timeout(1)'s
TAIL_LINES = 12
_TAIL_WIDTH = 400
_READ = 1 << 20
_PIPE_SIZE = 1 << 20  # fewer wake-ups per MB than the default 64 KiB (capped by fs.pipe-max-size)
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@dataclass
class Settings:
    grace: float = 30.0
    timeout: Optional[float] = None  # seconds for the whole job, restarts included
    label: str = ""  # a template with {rank}: put in front of every line of a local rank
    signals: Dict[int, Optional[int]] = field(default_factory=dict)  # a manager's: what to send it instead
    host: str = field(default_factory=socket.gethostname)
    err_file: Callable[[int], str] = lambda rank: ""  # a rank's stderr file when log.dir keeps it
    failure: str = ""  # a manager's report of its first failed rank (start.failure): groups rank, code, host
    exit_codes: Optional[ExitCodesSpec] = None  # a manager's report of every rank's end (start.exit_codes)
    shown: Optional[List[int]] = None  # the local ranks whose output is shown (None: all)


class _Lines(LineCopier):
    """One output stream of a member, copied in whole lines (rank/tee.py's copier); of a rank's stderr, its last
    lines are kept for the root cause; of a manager's stdout, its report of the ranks' ends, off the output."""

    def __init__(
        self, target: Optional[int], label: bytes, keep_tail: bool, report: Optional[ReportLines] = None
    ) -> None:
        super().__init__(target, label)
        self.shown = target is not None  # else read and dropped (a rank not shown)
        self.report = report
        self.reported = b""
        self.tail: Optional[Deque[bytes]] = deque(maxlen=TAIL_LINES) if keep_tail else None
        self.partial = b""  # the tail's unfinished last line
        self.fresh = False  # the tail has changed since the supervisor last read it

    @property
    def broken(self) -> bool:
        """The target stopped taking bytes."""
        return self.shown and self.target is None

    def feed(self, data: bytes, now: float) -> None:
        if self.tail is not None:
            self._keep(data)
        if self.target is not None:
            self.copy(data, now)

    def _keep(self, data: bytes) -> None:
        assert self.tail is not None
        self.fresh = True
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[-_TAIL_WIDTH:]
        self.tail.extend(line[:_TAIL_WIDTH] for line in lines[-TAIL_LINES:])

    def last_lines(self) -> List[str]:
        lines = list(self.tail or ()) + ([self.partial] if self.partial else [])
        return [line.decode(errors="replace").rstrip("\r") for line in lines][-TAIL_LINES:]

    def _shown(self, lines: bytes) -> bytes:
        """The lines without the manager's report, which is kept in ``reported``."""
        if self.report is None:
            return lines
        before = b""
        if not self.reported:
            found = self.report.first.search(lines)
            if found is None:
                return lines
            self.reported = found.group(0)
            before, lines = lines[: found.start()], lines[found.end() :]
        while more := self.report.more.match(lines):  # its next hosts' lines, also when they come in a later read
            self.reported += more.group(0)
            lines = lines[more.end() :]
        return before + lines

    def _waits(self, held: bytes) -> bool:
        """``held``, a partial line, may be the start of the manager's report: it waits for its end, however long
        (Hydra writes its report's first word, then the rest once it has every rank's code)."""
        start = self.report.start if self.report else b""
        return bool(start and held) and (held.startswith(start) or start.startswith(held))

    def finish(self) -> None:
        if self._waits(self.held):  # the manager's report without its line end
            found = len(self.reported)
            rest = self._shown(self.held + b"\n")
            self.held = rest if len(self.reported) > found else self.held
        super().finish()


@dataclass
class Member:
    """One process the supervisor started: a local rank, or a manager."""

    name: str  # "rank 3", "mpiexec.hydra"
    pid: int
    group: bool  # stop signals go to its whole process group (a rank), or to it alone (a manager)
    code: Optional[int] = None  # shell-style: 128+N for signal N
    ended: float = 0.0
    out: Optional[_Lines] = None
    err: Optional[_Lines] = None

    def send(self, signum: int, whole_group: bool = True) -> None:
        try:
            if (self.group and whole_group) or signum == signal.SIGKILL:
                os.killpg(self.pid, signum)  # the group outlives its leader while a child of it runs
            elif self.code is None:
                os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Outcome:
    kind: str  # "done", "failed", "stopped", "timeout"
    code: int
    first: Optional[Member] = None
    stopped: int = 0  # members still running when the first failed, stopped by ds-helper
    reported: Optional[RankEnd] = None  # the rank a manager reported failed while it waited for the others
    members: List[Member] = field(default_factory=list)


class _Signals:
    """The signals ds-helper handles, as bytes on a pipe the loop selects on (``signal.set_wakeup_fd``)."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.previous: Dict[int, object] = {}
        ignored = {s for s in (*STOPS, *NOTICES) if signal.getsignal(s) == signal.SIG_IGN}  # nohup's HUP stays so
        self.old_wakeup = signal.set_wakeup_fd(self.write, warn_on_full_buffer=False)
        for signum in (*STOPS, *NOTICES, *_SUSPENDS, *_OTHERS):
            if signum not in ignored:
                self.previous[signum] = signal.signal(signum, _note)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.previous)

    def pending(self) -> List[int]:
        try:
            return list(os.read(self.read, 1024))
        except BlockingIOError:
            return []

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_wakeup)
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        os.close(self.read)
        os.close(self.write)


def _note(signum: int, frame: object) -> None:
    """The byte on the wake-up pipe is the whole message."""


def _terminal_out() -> bool:
    try:
        return os.isatty(1)
    except OSError:
        return False


def _stdout_pair(as_terminal: bool) -> tuple[int, int]:
    """(read end, write end) for a member's stdout: a pseudo terminal passing bytes unchanged, or a pipe."""
    if as_terminal:
        import fcntl
        import termios

        master, slave = os.openpty()
        attributes = termios.tcgetattr(slave)
        attributes[1] &= ~termios.OPOST  # no \n -> \r\n: the real terminal does that once
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
        try:
            size = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        except OSError:
            pass
        os.set_inheritable(master, False)
        return master, slave
    return _pipe()


def _pipe() -> tuple[int, int]:
    import fcntl

    read, write = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # above this user's limit: the default size works, a little slower
    return read, write


def _spawn(command: List[str], env: Dict[str, str], out_w: int, err_w: int, stdin: bool) -> int:
    """Start ``command`` in a session of its own, dying with ds-helper (even by SIGKILL). Every other descriptor
    passed down to ds-helper stays open, as under mpiexec; without ``stdin``, stdin is /dev/null."""

    def in_child() -> None:
        if not stdin:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        if _SOFT_LIMIT[0] >= 0:
            import resource

            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (_SOFT_LIMIT[0], hard))
        for signum in (*STOPS, *NOTICES, *_SUSPENDS, *_OTHERS):  # a signal before the exec acts as it would after
            if signal.getsignal(signum) is _note:
                signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)  # the parent's pipe: not for the child's signals

    return fork_exec(command, out_w, err_w, detach="session", env=env, in_child=in_child)


def _children(pid: Optional[int] = None) -> List[int]:
    """A process's children now (None: this one's, orphans re-parented to it included), from
    ``/proc/PID/task/TID/children``."""
    folder = f"/proc/{pid or 'self'}/task"
    found: List[int] = []
    try:
        tasks = os.listdir(folder)
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"{folder}/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` on this machine, parents before their children."""
    found: List[int] = []
    below = _children(pid)
    while below:
        found += below
        below = [child for parent in below for child in _children(parent)]
    return found


def _more_descriptors() -> int:
    """Raise this process's descriptor limit to the hard one (3 per rank here: 1024 ranks pass the usual soft
    1024); the soft limit it had, which each member gets back before its exec."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return soft


_SOFT_LIMIT = [-1]  # the descriptor limit ds-helper was started with, for the members


def become_subreaper() -> bool:
    try:
        return libc_function("prctl")(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Attempt:
    """One run of the whole job: start the members, copy their output, handle signals, until all have ended."""

    def __init__(
        self, commands: List[List[str]], envs: List[Dict[str, str]], names: List[str], group: bool, settings: Settings
    ) -> None:
        self.settings = settings
        self.members: List[Member] = []
        self.streams: Dict[int, _Lines] = {}
        self.by_pid: Dict[int, Member] = {}
        self.suspended: List[int] = []  # a manager's processes on this machine that ds-helper stopped (Ctrl-Z)
        as_terminal = _terminal_out()
        for index, (command, env, name) in enumerate(zip(commands, envs, names, strict=True)):
            label = settings.label.format(rank=index).encode() if settings.label and group else b""
            out_r, out_w = _stdout_pair(as_terminal)
            err_r, err_w = _pipe()
            try:
                pid = _spawn(command, env, out_w, err_w, stdin=index == 0)  # stdin is rank 0's, as under mpiexec
            finally:
                os.close(out_w)
                os.close(err_w)
            member = Member(name, pid, group)
            shown = not group or settings.shown is None or index in settings.shown
            member.err = _Lines(2 if shown else None, label, keep_tail=True)
            report = report_lines(settings.exit_codes) if settings.exit_codes and not group else None
            member.out = _Lines(1 if shown else None, label, keep_tail=False, report=report)
            self.streams[out_r] = member.out
            self.streams[err_r] = member.err
            self.members.append(member)
            self.by_pid[pid] = member

    def running(self) -> List[Member]:
        return [m for m in self.members if m.code is None]

    def suspend(self) -> None:
        """Ctrl-Z: stop every rank on this machine (alone in its session, a member ignores SIGTSTP: an orphaned
        process group); a manager with everything it started here, as it would otherwise go on reading the
        terminal for rank 0's stdin, taking the shell's ``fg``."""
        for member in self.running():
            if member.group:
                member.send(signal.SIGSTOP)
            else:
                self.suspended += [member.pid, *_descendants(member.pid)]
        for pid in self.suspended:
            _signal_quietly(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.suspended:
            _signal_quietly(pid, signal.SIGCONT)
        self.suspended = []
        self.send(signal.SIGCONT)

    def send(self, signum: int, whole_group: bool = True) -> None:
        for member in self.members:
            member.send(signum, whole_group)


def _reap(attempt: Attempt, now: float) -> List[Member]:
    """Collect every child that ended (orphans re-parented here too); the members among them, in order."""
    ended: List[Member] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        member = attempt.by_pid.get(pid)
        if member is not None:
            member.code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            member.ended = now
            ended.append(member)


def _say(text: str) -> None:
    """errors.say's line, written through write_all: stderr may be a descriptor that does not block."""
    sys.stderr.flush()
    write_all(2, (line(text) + "\n").encode())


class Supervisor:
    """The loop: output, signals, ended children, the time limit; one attempt of the job at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signals = _Signals()
        self.deadline = float("inf") if settings.timeout is None else time.monotonic() + settings.timeout
        self.said: set[int] = set()

    def run(self, attempt: Attempt) -> Outcome:
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.signals.read, selectors.EVENT_READ)
        streams = dict(attempt.streams)
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        outcome: Optional[Outcome] = None
        kill_at = float("inf")
        ending = False  # the manager got its own kill signal (start.signals' SIGKILL); SIGKILL comes next
        swept = False

        def stop(now: float, signum: int) -> None:
            nonlocal kill_at
            attempt.send(signum)
            kill_at = min(kill_at, now + self.settings.grace)

        while True:
            now = time.monotonic()
            wait = min(kill_at, self.deadline, now + 5.0) - now
            if any(stream.held for stream in streams.values()):
                wait = min(wait, HOLD_SECONDS)
            for key, _ in selector.select(max(0.0, wait)):
                if key.fd != self.signals.read:
                    self._copy(int(key.fd), streams, selector, now)
            now = time.monotonic()
            for stream in streams.values():
                stream.flush_held(now)
            for got in self.signals.pending():
                signum = self._passed_on(got)
                if got in STOPS:
                    outcome = outcome or Outcome("stopped", 0)
                    stop(now, signum or got)
                elif got in NOTICES and signum:
                    attempt.send(signum, whole_group=False)
                elif got in _SUSPENDS:
                    attempt.suspend()
                    os.kill(os.getpid(), signal.SIGSTOP)  # here until SIGCONT (the shell's fg or bg)
                elif got == signal.SIGCONT:
                    attempt.resume()
            ended = _reap(attempt, now)
            if outcome is None:
                outcome = self._failure_or_time_limit(attempt, ended, now)
                if outcome is not None:
                    stop(now, self._instead(signal.SIGTERM))
            if now >= kill_at:
                kill = signal.SIGKILL if ending else self._instead(signal.SIGKILL)
                attempt.send(kill)
                if kill == signal.SIGKILL:
                    for orphan in _children():
                        _signal_quietly(orphan, signal.SIGKILL)
                    kill_at = float("inf")
                else:  # the manager ends its ranks itself; SIGKILL if it has not after another grace
                    ending, kill_at = True, now + self.settings.grace
            if attempt.running():
                continue
            leftovers = _children()  # the ranks' children and daemons, re-parented here
            if leftovers and not swept:
                swept = True
                stop(now, signal.SIGTERM)
                for orphan in leftovers:
                    _signal_quietly(orphan, signal.SIGTERM)
            elif not leftovers:
                for fd in list(streams):  # every writer has ended: what is left is read without waiting
                    selector.unregister(fd)
                    _drain(fd, streams.pop(fd))
                break
        selector.close()
        result = outcome or Outcome("done", 0)
        if result.kind == "failed" and result.first and result.first.code:  # a manager's own code, once it ended
            result.code = result.first.code
        if result.kind == "stopped":  # the first rank to end with a code says how the job ended
            result.code = next((m.code for m in sorted(attempt.members, key=lambda m: m.ended) if m.code), 0)
        result.members = attempt.members
        return result

    def _failure_or_time_limit(self, attempt: Attempt, ended: List[Member], now: float) -> Optional[Outcome]:
        """How the job ends, if it must now: a member failed, a manager reported a failed rank while it waits for
        the others, or the time limit passed."""
        failed = next((member for member in ended if member.code), None)
        if failed is not None:
            return Outcome("failed", failed.code or 0, first=failed, stopped=len(attempt.running()))
        reported = self._reported_failure(attempt)
        if reported is not None:  # the manager's own code comes once it has ended
            return Outcome("failed", 0, first=attempt.members[0], reported=reported)
        return Outcome("timeout", TIMEOUT_CODE) if now >= self.deadline else None

    def _reported_failure(self, attempt: Attempt) -> Optional[RankEnd]:
        """A manager's report of a failed rank on its stderr (``start.failure``), read as it comes: srun writes it
        when the task ends, then waits for the others (conf/launcher/slurm.yaml)."""
        manager = attempt.members[0]
        if manager.group or manager.err is None or not manager.err.fresh or not self.settings.failure:
            return None
        manager.err.fresh = False
        return first_failure(self.settings.failure, "\n".join(manager.err.last_lines()))

    def _instead(self, signum: int) -> int:
        """What a manager gets for ds-helper's own SIGTERM or SIGKILL (``start.signals``): srun kills its ranks
        at once on SIGTERM, and leaves them running when it dies of SIGKILL (conf/launcher/slurm.yaml)."""
        return self.settings.signals.get(signum) or signum

    def _passed_on(self, got: int) -> Optional[int]:
        """The signal a member gets for ``got`` (a manager's ``start.signals``); None, said once: not passed on."""
        if got not in self.settings.signals:
            return got
        sent = self.settings.signals[got]
        if sent is None and got not in self.said:
            self.said.add(got)
            _say(f"{signal_name(got)} is not passed on: the manager would die of it (docs/jobs.md, Supervision)")
        return sent

    @staticmethod
    def _copy(fd: int, streams: Dict[int, _Lines], selector: selectors.BaseSelector, now: float) -> None:
        try:
            data = os.read(fd, _READ)
        except OSError:  # EIO: a pseudo terminal whose every writer has closed it
            data = b""
        stream = streams[fd]
        if data:
            stream.feed(data, now)
        if not data or (stream.broken and stream.tail is None):
            selector.unregister(fd)
            os.close(fd)  # the writer gets EPIPE, as it would alone with nobody reading
            streams.pop(fd).finish()

    def close(self) -> None:
        self.signals.close()


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(fd: int, stream: _Lines) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, _READ)
        except OSError:
            data = b""
        if not data:
            break
        stream.feed(data, time.monotonic())
    os.close(fd)
    stream.finish()


def _last_lines(path: str) -> List[str]:
    """The end of a rank's log file (log.dir), read from its last 64 KiB."""
    if not path:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
            data = handle.read()
    except OSError:
        return []
    stream = _Lines(None, b"", keep_tail=True)
    stream.feed(data, 0.0)
    return stream.last_lines()


def summary(outcome: Outcome, settings: Settings, started: float) -> List[str]:
    """The job's last lines when it failed: the first member to fail and why, then its last stderr lines (a
    manager's: the rank it reports, and that rank's own file when log.dir keeps one)."""
    first = outcome.first
    if first is None or first.code is None:
        return []
    tail = first.err.last_lines() if first.err else []
    named = None if first.group else outcome.reported or _reported(settings, first, tail)
    rank = outcome.members.index(first) if first.group else (named.rank if named else None)
    err_file = settings.err_file(rank) if rank is not None else ""
    own = _last_lines(err_file)
    if first.group:  # a local rank: its own stream, or its file when log.dir took its stderr
        tail = tail or own
        source = f"{first.name} failed first; its last lines on stderr{f' ({err_file})' if err_file else ''}:"
    elif own:  # the rank the manager names kept its own file: better than every rank's lines merged
        tail, source = own, f"rank {rank} failed; its last lines on stderr ({err_file}):"
    else:
        source = f"{first.name}'s last lines on stderr:"
    lines = [source, *([f"  | {line}" for line in tail] or ["  (nothing)"])]
    after = f"{first.ended - started:.1f} s after the start"
    others = f"; ds-helper stopped the {outcome.stopped} still running (SIGTERM)" if outcome.stopped else ""
    ended = f"{first.name} on {settings.host} {describe_status(first.code)}"
    lines.append(f"job failed: {f'{named.details()}; ' if named else ''}{ended}, {after}{others}")
    return lines


def _reported(settings: Settings, manager: Member, tail: List[str]) -> Optional[RankEnd]:
    """The rank a manager names as failed: from its line of every rank's code, or its line on the first to fail."""
    reported = manager.out.reported.decode(errors="replace") if manager.out else ""
    every = every_rank(settings.exit_codes, reported) if settings.exit_codes else []
    return root_cause(every) or first_failure(settings.failure, "\n".join(tail))


def run_job(
    command_for: Callable[[int], List[List[str]]],
    envs_for: Callable[[int], List[Dict[str, str]]],
    names: List[str],
    group: bool,
    restarts: int,
    settings: Settings,
) -> int:
    """Run the job, again after a failure up to ``restarts`` times; its exit code (failing rank's, 124, 0)."""
    become_subreaper()
    _SOFT_LIMIT[0] = _more_descriptors()
    supervisor = Supervisor(settings)
    try:
        for number in range(restarts + 1):
            started = time.monotonic()
            attempt = Attempt(command_for(number), envs_for(number), names, group, settings)
            outcome = supervisor.run(attempt)
            if outcome.kind == "timeout":
                _say(f"job.timeout={settings.timeout:g}: the job ran longer; stopped it (exit code {TIMEOUT_CODE})")
                return TIMEOUT_CODE
            if outcome.kind != "failed":
                return outcome.code
            for text in summary(outcome, settings, started):
                _say(text)
            if number < restarts:
                assert outcome.first is not None
                _say(
                    f"restarting the job (restart {number + 1} of job.restarts={restarts}): "
                    f"{outcome.first.name} {describe_status(outcome.code)}"
                )
        return outcome.code
    finally:
        supervisor.close()
