"""Become the script: ``os.execve`` in place of this process, or, for a dry run, say what that would do.

Exec rather than a child process: the process manager keeps tracking the same pid, its signals reach the script
directly, inherited descriptors such as PMI's ``PMI_FD`` stay open, the exit code is the script's own, and no
helper stays resident.
"""

from __future__ import annotations

import io
import os
import sys

from ds_helper.rank import bind
from ds_helper.rank.checks import check_log_names
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.inherit import (
    death_signal_setter,
    flush_quietly,
    python_signals,
    release_held_fds,
    restore_signals,
    say,
)
from ds_helper.rank.plan import RANK_FIELDS, python_target

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from types import ModuleType
    from typing import List, NoReturn, Optional, TextIO

    from ds_helper.rank.plan import Plan
    from ds_helper.rank.resolve import Launch

SIGINT, SIGKILL = 2, 9  # Linux's numbers; the signal module imports enum, which a rank does not need

_SHELL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def shell_quote(arg: str) -> str:
    """``arg`` as a shell would need it typed: what ``shlex.quote`` does (shlex imports re, a rank does not)."""
    return arg if arg and _SHELL_SAFE.issuperset(arg) else "'" + arg.replace("'", "'\"'\"'") + "'"


def _quote(argv: List[str]) -> str:
    return " ".join(map(shell_quote, argv))


def _rank_label(launch: Launch) -> str:
    world = launch.ranks["world_size"]
    return f"rank {launch.ranks['rank']}" + (f"/{world}" if world is not None else "")


def find_program(name: str, path: Optional[str]) -> str:
    """``name`` as exec would find it on ``path`` (no_python=true), or a clear error."""
    if os.sep in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in (path or os.defpath).split(os.pathsep)]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise LaunchError(f"no_python=true: {name!r} is not an executable file" + ("" if os.sep in name else " on PATH"))


def describe(plan: Plan, launch: Launch, out: TextIO) -> None:
    """The dry run: where each number came from, every env change, and the command."""
    print(f"ds-helper dry run: {_rank_label(launch)}, launcher={launch.launcher} ({launch.why})", file=out)
    for name in RANK_FIELDS:
        number = launch.ranks[name]
        shown = "-" if number is None else str(number)
        print(f"  {name:<17} {shown:<8} {launch.ranks.sources[name] or 'not given by the manager'}", file=out)
    print("  environment:", file=out)
    for change in launch.changes:
        text = "(unset)" if change.value is None else change.value
        print(f"    {change.name}={text}    # {change.why}", file=out)
    if launch.layout_table:
        print("  binding on this node:", file=out)
        for line in launch.layout_table.splitlines():
            print(f"    {line}", file=out)
    for note in launch.notes:
        print(f"  note: {note}", file=out)
    print(f"  command: {_quote(launch.argv)}", file=out)
    if plan.run_mode == "inprocess":
        blocker = in_process_blocker(plan, launch)
        how = "in ds-helper's interpreter" if blocker is None else f"by exec ({blocker})"
        print(f"  run_mode=inprocess: the script runs {how}", file=out)


def should_log(plan: Plan, launch: Launch) -> bool:
    return not plan.log.quiet and (plan.log.all_ranks or launch.ranks["rank"] == 0)


def _die_with_manager() -> None:
    """SIGKILL for the script when the manager's process that started this rank dies, even by SIGKILL.

    The setting survives execve, so the script itself carries it: a ``kill -9`` of mpirun no longer leaves
    ranks running (Open MPI's do, with a bare ``python``). ``die_with_manager=false`` turns it off.
    """
    if not death_signal_setter()(os.getppid()):  # the manager died before the setting took effect
        raise SystemExit(128 + SIGKILL)


def _log_names(plan: Plan, launch: Launch) -> dict[str, str]:
    values = {name: launch.ranks[name] for name in ("rank", "local_rank", "node_rank")}
    fields = {name: ("" if value is None else str(value)) for name, value in values.items()}
    names = {key: getattr(plan.log, key).format(**fields) for key in ("out", "err", "prefix")}
    if plan.log.dir:
        for key in ("out", "err"):
            names[key] = os.path.join(plan.log.dir, names[key])
    return names


def _open_logs(plan: Plan, launch: Launch) -> Optional[dict[str, str]]:
    """With log.dir: the rank's file names, the folder and the (new, empty) files created; without: None."""
    if not plan.log.dir and not plan.log.tee:
        return None
    names = _log_names(plan, launch)
    if plan.log.dir:
        check_log_names(plan.log, launch.ranks["world_size"], launch.ranks["node_rank"])
        try:
            os.makedirs(plan.log.dir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LaunchError(f"log.dir={plan.log.dir}: not a folder (a file is in the way)") from None
        except OSError as exc:
            raise LaunchError(f"log.dir={plan.log.dir}: {exc.strerror}") from None
        _create_new(names["out"], names["err"])
    return names


def _create_new(*paths: str) -> None:
    """Create each log file, refusing one that exists: an earlier run's log, another job's or another rank's."""
    created: List[str] = []
    for path in paths:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        except OSError as exc:
            for done in created:  # nothing left behind
                os.unlink(done)
            if isinstance(exc, FileExistsError):
                raise LaunchError(
                    f"log file {path} exists: ds-helper never overwrites a log (remove it, or choose another log.dir)"
                ) from None
            raise LaunchError(f"cannot write {path}: {exc.strerror}") from None
        created.append(path)


def _open_log_files(names: dict[str, str]) -> list[tuple[int, int]]:
    """The rank's new files (``_create_new``) for stdout and stderr, opened before anything changes, fd pairs."""
    opened: list[tuple[int, int]] = []
    for fd, key in ((1, "out"), (2, "err")):
        try:
            opened.append((os.open(names[key], os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW), fd))
        except OSError as exc:
            for target, _ in opened:
                os.close(target)
            raise LaunchError(f"cannot write {names[key]}: {exc.strerror}") from None
    return opened


def _redirect(opened: list[tuple[int, int]]) -> int:
    """stdout and stderr of the script into the rank's files, kept through exec; returns the old stderr."""
    terminal = os.dup(2)  # not inheritable: for an exec failure only
    for target, fd in opened:
        os.dup2(target, fd)
        os.close(target)
    return terminal


def _supervisor_argv(plan: Plan, launch: Launch, program: str, names: dict[str, str]) -> List[str]:
    """``python -c <start the supervisor> FD``: the spec travels in an inherited memory file, not in argv, so the
    script's argument list has no limit beyond the one exec puts on the script itself."""
    import json

    spec = {
        "argv": [program, *launch.argv[1:]],
        "out": names["out"] if plan.log.dir else None,
        "err": names["err"] if plan.log.dir else None,
        "prefix": names["prefix"],
        "grace": plan.log.grace,
    }
    data = json.dumps(spec).encode()
    spec_fd = os.memfd_create("ds-helper-spec", 0)
    os.set_inheritable(spec_fd, True)  # for the supervisor, which reads and closes it first thing
    written = 0
    while written < len(data):
        written += os.write(spec_fd, data[written:])
    os.lseek(spec_fd, 0, os.SEEK_SET)
    return [sys.executable, "-c", _SUPERVISOR_START, str(spec_fd)]


# ``python -m`` would put the current directory first on sys.path, and a user's folder named ``ds_helper`` (or a
# ``json.py`` next to their script) would then stand in for the supervisor's modules. ``-c`` puts '' there
# instead, which the supervisor drops before importing anything but ``sys`` (``-P`` does the same, from 3.11).
_SUPERVISOR_START = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from ds_helper.rank.tee import main\n"
    "sys.exit(main())\n"
)


def in_process_blocker(plan: Plan, launch: Launch) -> Optional[str]:
    """Why this rank execs after all with run_mode=inprocess (None: the script may run in this interpreter).

    Only a Python script or module run by this very interpreter, with nothing that acts when an interpreter
    starts, can run here (docs/design.md: running the script in process).
    """
    if plan.run_mode != "inprocess":
        return "run_mode=exec"
    if len(plan.argv) == 1:  # [program]: see Plan.argv
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
    module, target, unbuffered = python_target(plan.argv)
    args = launch.argv[len(plan.argv) :]
    _become_environment(launch.env)
    if unbuffered:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: closed when ds-helper started, as Python leaves it
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
    sys.argv = [target, *args]
    try:
        if module:
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


def become(plan: Plan, launch: Launch) -> NoReturn:
    """Replace this process with the script (or, with run_mode=inprocess, run it here). Returns only by raising."""
    if plan.dry_run:
        describe(plan, launch, sys.stdout)
        sys.stdout.flush()
        raise SystemExit(0)
    program = launch.argv[0]
    if not os.path.isabs(program) or not os.path.isfile(program):
        program = find_program(program, launch.env.get("PATH"))
    logging = should_log(plan, launch)
    bind.apply(launch.placement, logging)
    names = _open_logs(plan, launch)
    opened = _open_log_files(names) if names is not None and not plan.log.tee else []
    # Only a rank a manager started dies with it; a standalone run outlives its shell as `python` would.
    if plan.die_with_manager and launch.managed and os.getppid() != 1:
        _die_with_manager()
    argv = launch.argv
    if names is not None and plan.log.tee:
        argv = _supervisor_argv(plan, launch, program, names)
        program = argv[0]
    if logging:  # every check has passed: what is said now is what runs
        for note in launch.notes:
            say(f"ds-helper: note: {note}")
        say(f"ds-helper: {_rank_label(launch)} launcher={launch.launcher}: {_quote(launch.argv)}")
    flush_quietly()
    terminal = _redirect(opened) if opened else None
    if in_process_blocker(plan, launch) is None:
        release_held_fds()
        run_in_process(plan, launch)
    restore_signals()
    try:
        os.execve(program, argv, launch.env)
    except OSError as exc:
        python_signals()  # Python's own settings again, for reporting the error
        if terminal is not None:  # the error belongs on the terminal, not in the rank's log file
            os.dup2(terminal, 2)
        raise LaunchError(f"cannot run {program}: {exc.strerror}") from None
