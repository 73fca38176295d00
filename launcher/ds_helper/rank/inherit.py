"""What a program started by ds-helper inherits besides argv and env: standard streams and signal state.

A shell starts a program with every signal at its default (unless the shell itself was told to ignore one, as
``nohup`` does with SIGHUP) and nothing blocked. Python ignores SIGPIPE and SIGXFSZ for its own use, and exec
keeps an ignored signal ignored, so ``restore_signals`` puts them back before every exec, as ``subprocess``
does (its ``restore_signals=True`` resets exactly these).

A closed standard stream (``ds-helper train.py >&-``) makes Python's ``sys.stdout`` None, and the next file
ds-helper opens would take its number and reach the script as its stdout. ``hold_closed_fds`` puts
``/dev/null`` there, close-on-exec: ds-helper can write without a care, and the script is exec'd with the
stream closed again, exactly as ``python train.py >&-`` would run it.

``death_signal_setter`` gives the kill-with-parent setting (``PR_SET_PDEATHSIG``), which also survives exec:
a rank dies with the manager that started it, the tee supervisor's script and ds-helper's own local ranks with
ds-helper. Standard library only (per-rank path).
"""

from __future__ import annotations

# The signal module's C core: ``signal`` itself imports enum, which a rank does not need.
import _signal  # type: ignore[import-not-found]
import os
import sys

TYPE_CHECKING = False  # typing is not imported on a rank's path: the names below exist for mypy only
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional

# The signals CPython sets to SIG_IGN at start-up (Python/pylifecycle.c), which subprocess restores too:
# SIGPIPE and SIGXFSZ, by their Linux numbers.
PYTHON_IGNORED = (13, 25)

_held: dict[int, tuple[int, int]] = {}  # closed standard descriptor -> (device, inode) of its placeholder
_closed_streams: dict[str, None] = {}  # sys attributes that were None for that reason


def hold_closed_fds() -> None:
    """Put close-on-exec ``/dev/null`` on each closed descriptor 0-2 and give Python a stream for it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            # The lowest free number is taken, and every lower standard one is open by now: it lands on fd.
            os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            _held[fd] = _identity(fd)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if fd in _held and getattr(sys, name) is None:
            _closed_streams[name] = None
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115 - lives on


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def release_held_fds() -> None:
    """Give back what ``hold_closed_fds`` took (unless a log file replaced it): for a script run in-process."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if fd in _held and _identity(fd) == _held[fd]:
            if name in _closed_streams:
                setattr(sys, name, None)
            os.close(fd)
    _held.clear()
    _closed_streams.clear()


def restore_signals() -> None:
    """Default dispositions for the signals Python ignores, and nothing blocked: right before an exec."""
    for signum in PYTHON_IGNORED:
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def python_signals() -> None:
    """Python's own settings again, when the exec did not happen after all."""
    for signum in PYTHON_IGNORED:
        _signal.signal(signum, _signal.SIG_IGN)


def flush_quietly() -> None:
    """Flush Python's buffers before exec; what cannot be written now never would have been."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


PR_SET_PDEATHSIG = 1
SIGINT, SIGKILL = 2, 9  # Linux's numbers: the signal module imports enum, which a rank does not need


def libc_function(name: str) -> Callable[..., int]:
    """``ctypes.CDLL(None).NAME``: a C library function already in this process, int arguments and result.

    Built from ctypes' C core, which is what ``ctypes.CDLL`` itself builds on: ``import ctypes`` first defines
    its whole type zoo and imports struct and types, a cost every rank would pay for this one call. Should that
    core ever change shape, ctypes itself is used.
    """
    try:
        import _ctypes

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL  # int arguments and an int result, as ctypes' default

        class Process:  # what ctypes.CDLL(None) holds: the program and the libraries it has loaded
            _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # None: the program

        function: Callable[..., int] = Function((name, Process))  # type: ignore[arg-type]  # has a _handle
    except (ImportError, AttributeError, TypeError):
        import ctypes

        function = getattr(ctypes.CDLL(None), name)
    return function


def death_signal_setter() -> Callable[[int], bool]:
    """``die_with(parent)``: SIGKILL for this process when ``parent`` exits, even by SIGKILL; False when it had
    exited already (before the setting took effect). Made before a fork, it needs no import in the child.

    The kernel sends the signal when the parent *thread* that forked the process exits; the managers tested
    (MPICH's proxy, Open MPI's mpirun, slurmstepd) fork ranks from threads that live as long as the job.
    """
    prctl = libc_function("prctl")

    def die_with(parent: int) -> bool:
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        return os.getppid() == parent

    return die_with


def fork_exec(
    argv: List[str],
    out_fd: int,
    err_fd: int,
    detach: str = "",
    env: Optional[Dict[str, str]] = None,
    in_child: Optional[Callable[[], None]] = None,
) -> int:
    """Fork and exec ``argv`` with its stdout and stderr on ``out_fd`` and ``err_fd``, killed by SIGKILL when this
    process exits (even by SIGKILL); its pid. ``detach``: ``"session"`` (a session of its own: no terminal's
    signals), ``"group"`` (a process group of its own: a signal to the group reaches its children), ``""``
    (neither). ``in_child`` runs in the child right before the exec; a failed exec is one error line and 127.
    Used by the tee (rank/tee.py) and the job's supervisor (job/supervisor.py)."""
    parent = os.getpid()
    die_with = death_signal_setter()  # made before the fork: the child only calls it
    pid = os.fork()
    if pid == 0:
        try:
            if detach == "session":
                os.setsid()
            elif detach == "group":
                os.setpgid(0, 0)
            if not die_with(parent):  # this process died before the setting took effect
                os._exit(128 + SIGKILL)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            if in_child is not None:
                in_child()
            restore_signals()
            os.execvpe(argv[0], argv, os.environ if env is None else env)
        except OSError as exc:
            from ds_helper.rank.errors import line

            os.write(2, (line(f"cannot run {argv[0]}: {exc.strerror}", "error") + "\n").encode())
        os._exit(127)
    return pid
