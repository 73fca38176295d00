"""Checks of a plan's values, shared by composition (``compose/planner.py``) and the plan loader (``rank/load.py``).

A saved plan is data anyone may have edited, so it is held to the same rules as a composed config: one set of
functions, called from both sides. Standard library only, and no ``re``, ``dataclasses`` or ``typing`` at run
time: the loader runs on every rank of a job.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # the parser behind str.format (string.Formatter.parse), without importing `string`

from ds_helper.rank.errors import LaunchError
from ds_helper.rank.plan import COMMAND_KINDS, RANK_FIELDS

TYPE_CHECKING = False  # typing is not imported on a rank's path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ds_helper.rank.plan import CommandSpec, LauncherSpec, LogSpec, MasterSpec, Plan

LOG_PLACEHOLDERS = ("rank", "local_rank", "node_rank")
RUN_MODES = ("exec", "inprocess")
MAX_PORT = 65535
MAX_COUNT = 1 << 31
"""Far above any real rank count: manager numbers (resolve.py) and fixed values are below it, which keeps absurd
values out of ports and core maths."""
_SPEC_CHARS = frozenset("0123456789d")


def _placeholders(key: str, template: str) -> list[str]:
    """The placeholders of a log name template; attributes, indexes and conversions ({rank.x}, {rank!r}) refused.

    A format spec of digits (``{rank:04d}``) is allowed: it can only pad a number.
    """
    used = []
    try:
        parts = list(_string.formatter_parser(template))
    except ValueError as exc:
        raise LaunchError(f"log.{key}={template!r}: bad placeholder ({exc})") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in LOG_PLACEHOLDERS or conversion or not set(spec or "") <= _SPEC_CHARS:
            raise LaunchError(
                f"log.{key}={template!r}: bad placeholder {name!r} (use {{rank}}, {{local_rank}}, {{node_rank}})"
            )
        used.append(name)
    return used


def _file_name(key: str, template: str) -> str:
    _placeholders(key, template)
    try:
        name = template.format(**dict.fromkeys(LOG_PLACEHOLDERS, 0))
    except ValueError as exc:
        raise LaunchError(f"log.{key}={template!r}: bad placeholder ({exc})") from None
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise LaunchError(f"log.{key}={template!r}: a file name inside log.dir, without '/'")
    return name


def check_log(log: LogSpec) -> None:
    """File names stay inside log.dir; stdout and stderr never share a file; log.dir is a plain path."""
    _file_name("out", log.out)
    _file_name("err", log.err)
    _placeholders("prefix", log.prefix)
    if log.dir is not None:
        if log.dir == "":
            raise LaunchError("log.dir is empty: give a folder, or leave it unset (null)")
        if "\0" in log.dir:
            raise LaunchError(f"log.dir={log.dir!r}: contains a NUL character")
        if "{" in log.dir or "}" in log.dir:
            raise LaunchError(
                f"log.dir={log.dir}: placeholders are not expanded in log.dir (use them in log.out and log.err)"
            )
        if log.out == log.err:
            raise LaunchError(f"log.out and log.err are both {log.out!r}: stdout and stderr would overwrite each other")
    if not (isinstance(log.grace, (int, float)) and 0 <= log.grace < float("inf")):  # NaN fails too
        finite = "must not be negative" if log.grace < 0 else "must be a finite number of seconds"
        raise LaunchError(f"log.grace={log.grace}: {finite}")


def rank_unique(template: str) -> bool:
    """Whether a log name differs on every rank of a job: it has {rank}, or {node_rank} and {local_rank}."""
    used = set(_placeholders("out", template))
    return "rank" in used or {"node_rank", "local_rank"} <= used


def check_log_names(log: LogSpec, world_size: int | None, node_rank: int | None) -> None:
    """Per rank, before any file is opened: the names must not collide with another rank's.

    The composing side does not know the world size, so this is checked on each rank: a name without
    {rank} is fine for a standalone run (world size 1) and refused, on every rank alike, in a job.
    """
    for key in ("out", "err"):
        template = getattr(log, key)
        used = _placeholders(key, template)
        if world_size != 1 and not rank_unique(template):
            raise LaunchError(
                f"log.{key}={template!r}: every rank of this job would write the same file; put {{rank}} in it "
                "(or {node_rank} and {local_rank})"
            )
        if "node_rank" in used and node_rank is None and world_size != 1:
            raise LaunchError(
                f"log.{key}={template!r}: this manager gives no node rank, so {{node_rank}} is unknown; use {{rank}}"
            )


def check_port(key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PORT:
        raise LaunchError(f"{key}={value}: a port is a number from 1 to {MAX_PORT}")
    return value


def check_master(master: MasterSpec) -> None:
    """Every port the master settings can produce is a real port."""
    if master.port is not None:
        check_port("master.port", master.port)
    check_port("master.default_port", master.default_port)
    base = check_port("master.port_base", master.port_base)
    span = master.port_span
    if not isinstance(span, int) or isinstance(span, bool) or span < 1 or base + span - 1 > MAX_PORT:
        raise LaunchError(
            f"master.port_span={span} with master.port_base={base}: ports from the job id must stay within "
            f"{base}-{MAX_PORT} (port_span from 1 to {MAX_PORT - base + 1})"
        )


def is_env_name(name: str) -> bool:
    """A portable environment variable name: ASCII letters, digits and _, not starting with a digit."""
    return name.isascii() and name.isidentifier()


def check_env_name(where: str, name: object) -> None:
    if not isinstance(name, str) or not name or "=" in name or "\0" in name:
        raise LaunchError(f"{where}: {name!r} is not a variable name (empty, or has '=' or NUL)")


def check_env(env: Mapping[str, str | None]) -> None:
    """Names execve can set, values it can pass (None unsets)."""
    for name, value in env.items():
        check_env_name(f"env.{name}", name)
        if value is not None and (not isinstance(value, str) or "\0" in value):
            raise LaunchError(f"env.{name}: {value!r} is not a string without NUL characters")


def check_words(where: str, words: Iterable[object]) -> None:
    for word in words:
        if not isinstance(word, str) or "\0" in word:
            raise LaunchError(f"{where}: {word!r} is not a string without NUL characters")


_START_PLACEHOLDERS = {
    "ranks": ("ranks",),
    "nodes": ("nodes",),
    "ranks_per_node": ("ranks_per_node",),
    "hosts": ("hosts",),
    "host_form": ("host", "ranks_per_node"),
    "env": ("name", "value"),
    "label": (),
}
"""The placeholders each template of a launcher's ``start`` block may use (job/start.py fills them)."""


def check_start(start: object, where: str) -> None:
    """Start templates use their own placeholders, plainly: no format spec ({ranks:>999999999999} would ask
    str.format for a terabyte), attribute, index or conversion."""
    for key, allowed in _START_PLACEHOLDERS.items():
        value = getattr(start, key)
        for template in [value] if isinstance(value, str) else value:
            try:
                parts = list(_string.formatter_parser(template))
            except ValueError as exc:
                raise LaunchError(f"{where}: start.{key}: {template!r}: bad placeholder ({exc})") from None
            for _literal, name, spec, conversion in parts:
                if name is not None and (name not in allowed or spec or conversion):
                    names = ", ".join(f"{{{name}}}" for name in allowed)
                    raise LaunchError(f"{where}: start.{key}: {template!r}: bad placeholder (use {names} as they are)")


def check_launcher(spec: LauncherSpec) -> None:
    """Variable names are names; fixed values are rank numbers."""
    for list_name in ("detect", "exclude", "job_id", "evidence"):
        for name in getattr(spec, list_name):
            check_env_name(f"launcher {spec.name}.{list_name}", name)
    for key, value in spec.fixed.items():
        if key not in RANK_FIELDS:
            raise LaunchError(f"launcher {spec.name}.fixed.{key}: not one of {', '.join(RANK_FIELDS)}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_COUNT:
            raise LaunchError(f"launcher {spec.name}.fixed.{key}={value!r}: not a rank number")


def check_export(export: object) -> None:
    for key in RANK_FIELDS:
        for name in getattr(export, key):
            check_env_name(f"export.{key}", name)


def check_command(command: CommandSpec) -> None:
    if command.kind not in COMMAND_KINDS:
        raise LaunchError(f"command.kind={command.kind!r}: expected one of {', '.join(COMMAND_KINDS)}")
    if not command.target or (command.kind != "program" and not command.python):
        raise LaunchError("damaged plan: empty command")
    check_words("command", [command.target, command.python])


def check_plan(plan: Plan) -> None:
    """Everything a plan fixes, checked the same way whether it was just composed or read from a file."""
    check_command(plan.command)
    check_words("args", plan.args)
    check_env(plan.env)
    check_export(plan.export)
    check_master(plan.master)
    check_log(plan.log)
    for spec in [*plan.launchers, *([plan.fallback] if plan.fallback is not None else [])]:
        check_launcher(spec)
    for name in plan.evidence:
        check_env_name("evidence", name)
    if plan.run_mode not in RUN_MODES:
        raise LaunchError(f"run_mode={plan.run_mode}: expected one of {', '.join(RUN_MODES)}")
