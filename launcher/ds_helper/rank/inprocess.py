"""``run_mode=inprocess``: the Python script run in ds-helper's own interpreter, as ``python [-u] SCRIPT ARGS`` runs
it (docs/design.md: running the script in process), where nothing that acts at an interpreter's start is asked for.

What ``exec`` gets from the kernel is done by hand: the environment, argv, ``sys.path[0]``, ``__main__``, unbuffered
output, and Python's own ending (exit code, traceback and exit 1, death by SIGINT).
"""

from __future__ import annotations

import io
import os
import sys

from ds_helper.rank.inherit import SIGINT
from ds_helper.rank.plan import command_argv

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from types import ModuleType
    from typing import NoReturn, Optional

    from ds_helper.rank.plan import Plan
    from ds_helper.rank.resolve import Launch


def in_process_blocker(plan: Plan, launch: Launch) -> Optional[str]:
    """Why this rank execs after all with run_mode=inprocess (None: the script may run in this interpreter).

    Only a Python script or module run by this very interpreter, with nothing that acts when an interpreter
    starts, can run here (docs/design.md: running the script in process).
    """
    if plan.run_mode != "inprocess":
        return "run_mode=exec"
    if plan.command.kind == "program":
        return "no_python=true runs a program, not a Python script"
    if plan.log.tee:
        return "log.tee=true needs a supervising process"
    starting = sorted(name for name in plan.env if name.startswith("PYTHON"))
    if starting:
        return f"env sets {', '.join(starting)}, which act only when an interpreter starts"
    same = launch.argv[0] == sys.executable  # the usual case, without resolving both paths link by link
    if not same and os.path.realpath(launch.argv[0]) != os.path.realpath(sys.executable):
        return f"the plan's interpreter {launch.argv[0]} is not the one running ds-helper ({sys.executable})"
    return None


def run_in_process(plan: Plan, launch: Launch) -> NoReturn:
    """Run the Python script in this interpreter, as ``python [-u] SCRIPT ARGS`` would (docs/design.md).

    What ``exec`` gets from the kernel is done by hand: the environment, argv, ``sys.path[0]``, ``__main__``,
    unbuffered output, and Python's own ending (exit code, traceback and exit 1, death by SIGINT).
    """
    import gc

    # Collection was off while ds-helper started (its command, launcher/ds-helper); on again for the script, as in
    # a fresh interpreter. ds-helper's own objects live as long as the script does (its modules stay loaded), so
    # they are frozen out of the script's collections first, the last one at exit among them: gc.freeze's
    # documented pattern for a long-lived start-up (docs/design.md).
    gc.freeze()
    gc.enable()
    command = plan.command
    args = launch.argv[len(command_argv(command)) :]
    _become_environment(launch.env)
    if command.unbuffered:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: closed when ds-helper started, as Python leaves it
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
    target = command.target
    sys.argv = [target, *args]
    try:
        if command.kind == "module":
            sys.path[0] = os.getcwd()  # python -m puts the current directory first
            _run_main_module(target, alter_argv=True)
        elif os.path.isdir(target) or _is_zip(target):
            sys.path[0] = _absolute(target)  # python runs the folder's or zip's __main__ from there
            _run_main_module("__main__", alter_argv=False)
        else:
            _run_source_file(target)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        import signal

        _report_uncaught()
        signal.signal(SIGINT, signal.SIG_DFL)  # Python ends by the signal, so the manager sees it
        os.kill(os.getpid(), SIGINT)
    except BaseException:  # noqa: B036 - the script's own exception, reported as Python would
        _report_uncaught()
        raise SystemExit(1) from None
    raise SystemExit(0)


def _become_environment(env: dict[str, str]) -> None:
    """``os.environ`` made equal to ``env``, touching only the variables that differ: ``os.environ.clear()``
    restarts its iteration for every variable it removes, quadratic in the size of an HPC job's environment."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _absolute(path: str) -> str:
    """The absolute path as CPython makes it for ``__file__`` and ``sys.path[0]``: joined, not normalised."""
    return os.path.join(os.getcwd(), path)


def _is_zip(path: str) -> bool:
    """A zip archive (python runs its ``__main__.py``): its end record is in the last 64 KiB + 22 bytes.

    Read by hand: the zipfile module would add its imports to every in-process rank."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65557))
            return b"PK\x05\x06" in handle.read()
    except OSError:
        return False


def _fresh_main() -> ModuleType:
    """A new ``__main__`` as the interpreter creates it at start-up (Python/pylifecycle.c), not ds-helper's own."""
    import builtins

    main = type(sys)("__main__")
    main.__dict__.update(__builtins__=builtins, __annotations__={})
    sys.modules["__main__"] = main
    return main


def _run_main_module(name: str, alter_argv: bool) -> None:
    """What CPython itself calls for ``python -m NAME`` and ``python FOLDER_OR_ZIP`` (Modules/main.c)."""
    import runpy  # finding a module by name is runpy's job (it imports importlib.util)

    _fresh_main()
    runpy._run_module_as_main(name, alter_argv=alter_argv)  # type: ignore[attr-defined]


def _run_source_file(target: str) -> None:
    """``python FILE``: ``__main__`` given what CPython gives it (Python/pythonrun.c), then the code.

    By hand rather than ``runpy.run_path``, which imports pkgutil (and with it re and typing) before it does the
    same. The script is the user's own command, the one thing this mode exists to run; plans and recipes still
    never run code.
    """
    from _frozen_importlib_external import SourceFileLoader  # loaded at start-up: what importlib.machinery names

    path = _absolute(target)
    sys.path[0] = os.path.dirname(os.path.realpath(path))  # python puts the script's real folder first
    main = _fresh_main()
    main.__dict__.update(__file__=path, __cached__=None, __loader__=SourceFileLoader("__main__", path))
    with io.open_code(path) as handle:  # the opener Python itself uses for scripts (audit hooks see it)
        code = compile(handle.read(), path, "exec", dont_inherit=True)  # not this module's __future__ flags
    exec(code, main.__dict__)  # the user's script, in this interpreter (run_mode=inprocess)


def _report_uncaught() -> None:
    """Python's traceback of the script's exception, without ds-helper's and runpy's frames."""
    kind, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename in (_THIS_FILE, "<frozen runpy>", _RUNPY_FILE):
        tb = tb.tb_next
    if value is not None:
        value.__traceback__ = tb  # the hook prints value.__traceback__, not the tb argument, on 3.11+
    sys.excepthook(kind, value, tb)  # type: ignore[arg-type]


_THIS_FILE = _report_uncaught.__code__.co_filename


_RUNPY_FILE = os.path.join(os.path.dirname(os.__file__), "runpy.py")
