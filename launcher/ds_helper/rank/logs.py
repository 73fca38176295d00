"""A rank's log files (``log.dir``): named per rank, created new (never over an earlier log), stdout and stderr
moved into them before the exec."""

from __future__ import annotations

import os

from ds_helper.rank.checks import LOG_PLACEHOLDERS, check_log_names
from ds_helper.rank.errors import LaunchError

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from typing import List

    from ds_helper.rank.plan import Plan
    from ds_helper.rank.resolve import Launch


def _log_names(plan: Plan, launch: Launch) -> dict[str, str]:
    values = {name: launch.ranks[name] for name in LOG_PLACEHOLDERS}
    fields = {name: ("" if value is None else str(value)) for name, value in values.items()}
    names = {key: getattr(plan.log, key).format(**fields) for key in ("out", "err", "prefix")}
    if plan.log.dir:
        for key in ("out", "err"):
            names[key] = os.path.join(plan.log.dir, names[key])
    return names


def open_logs(plan: Plan, launch: Launch) -> dict[str, str]:
    """The rank's file names (and prefix); with log.dir, the folder and the (new, empty) files created."""
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


def open_log_files(names: dict[str, str]) -> list[tuple[int, int]]:
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


def redirect_output(opened: list[tuple[int, int]]) -> int:
    """stdout and stderr of the script into the rank's files, kept through exec; returns the old stderr."""
    terminal = os.dup(2)  # not inheritable: for an exec failure only
    for target, fd in opened:
        os.dup2(target, fd)
        os.close(target)
    return terminal
