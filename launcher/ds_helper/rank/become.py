"""Become the script: ``os.execve`` in place of this process (or run it in process, ``rank/inprocess.py``), or,
for a dry run, say what that would do (``rank/describe.py``).

Exec rather than a child process: the process manager keeps tracking the same pid, its signals reach the script
directly, inherited descriptors such as PMI's ``PMI_FD`` stay open, the exit code is the script's own, and no
helper stays resident.
"""

from __future__ import annotations

import os
import sys

from ds_helper.rank import bind
from ds_helper.rank.errors import LaunchError, say
from ds_helper.rank.inherit import (
    SIGKILL,
    death_signal_setter,
    flush_quietly,
    python_signals,
    release_held_fds,
    restore_signals,
)

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

    from ds_helper.rank.plan import Plan
    from ds_helper.rank.resolve import Launch


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


def should_log(plan: Plan, launch: Launch) -> bool:
    return not plan.log.quiet and (plan.log.all_ranks or launch.ranks["rank"] == 0)


def _die_with_manager() -> None:
    """SIGKILL for the script when the manager's process that started this rank dies, even by SIGKILL.

    The setting survives execve, so the script itself carries it: a ``kill -9`` of mpirun no longer leaves
    ranks running (Open MPI's do, with a bare ``python``). ``die_with_manager=false`` turns it off.
    """
    if not death_signal_setter()(os.getppid()):  # the manager died before the setting took effect
        raise SystemExit(128 + SIGKILL)


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


def become(plan: Plan, launch: Launch) -> NoReturn:
    """Replace this process with the script (or, with run_mode=inprocess, run it here). Returns only by raising."""
    if plan.dry_run:
        from ds_helper.rank.describe import describe

        describe(plan, launch, sys.stdout)
        sys.stdout.flush()
        raise SystemExit(0)
    program = launch.argv[0]
    if not os.path.isabs(program) or not os.path.isfile(program):
        program = find_program(program, launch.env.get("PATH"))
    logging = should_log(plan, launch)
    bind.apply(launch.placement, warn=logging)
    names = opened = None
    if plan.log.dir or plan.log.tee:  # loaded only for log files or the tee
        from ds_helper.rank.logs import open_log_files, open_logs

        names = open_logs(plan, launch)
        opened = None if plan.log.tee else open_log_files(names)
    # Only a rank a manager started dies with it; a standalone run outlives its shell as `python` would.
    if plan.die_with_manager and launch.managed and os.getppid() != 1:
        _die_with_manager()
    argv = launch.argv
    if names is not None and plan.log.tee:
        argv = _supervisor_argv(plan, launch, program, names)
        program = argv[0]
    if logging:  # every check has passed: what is said now is what runs
        for note in launch.notes:
            say(note, "note")
        from ds_helper.rank.describe import quote_command, rank_label  # only a rank that logs says it

        say(f"{rank_label(launch)} launcher={launch.launcher}: {quote_command(launch.argv)}")
    flush_quietly()
    terminal = None
    if opened:
        from ds_helper.rank.logs import redirect_output

        terminal = redirect_output(opened)
    if plan.run_mode == "inprocess":
        from ds_helper.rank.inprocess import in_process_blocker, run_in_process

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
