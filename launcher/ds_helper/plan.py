"""A launch plan: everything about a launch that is the same on every rank, as plain serialisable data.

``compose`` turns the user's YAML and overrides into a :class:`Plan` once; ``resolve`` then combines the plan with
one rank's environment. Nothing here depends on a rank, a node or the environment, which is what lets a plan be
saved as JSON and reused by thousands of ranks without Hydra. Standard library only.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

from ds_helper import bind
from ds_helper.checks import check_log, check_plan
from ds_helper.errors import LaunchError
from ds_helper.schema import BindSpec, Config, ExportSpec, HostSource, LauncherSpec, LogSpec, MasterSpec

PLAN_FORMAT = 2
"""Bumped whenever a field changes meaning; a plan of another format is refused, never half-read."""


@dataclass
class Plan:
    """What every rank of one launch shares."""

    launchers: List[LauncherSpec]
    """The manager to read, or with launcher=auto every candidate in the order auto tries them."""
    auto: bool
    fallback: Optional[LauncherSpec]
    """With launcher=auto: used when no manager's variables are present at all (a standalone process)."""
    evidence: List[str]
    """With launcher=auto: any of these set means a manager started this rank, so no standalone fallback."""
    argv: List[str]
    """The command before any arguments: [python, -u, script], [python, -u, -m, module] or [program]."""
    args: List[str]
    """Script arguments from the config; those given after ``--`` are appended at resolve time."""
    env: Dict[str, Optional[str]]
    """Variables to set (a value) or unset (None) for the script, on top of the rank variables."""
    export: ExportSpec = field(default_factory=ExportSpec)
    master: MasterSpec = field(default_factory=MasterSpec)
    bind: BindSpec = field(default_factory=BindSpec)
    log: LogSpec = field(default_factory=LogSpec)
    dry_run: bool = False
    die_with_manager: bool = True
    run_mode: str = "exec"


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# The scalar and container field types of the plan's dataclasses (annotations are strings here, see
# ``from __future__``), and what a JSON value of that type looks like. Nested dataclasses are checked by their
# own ``_build`` call; any other annotation (BindSpec's ``Any``) is left to the code that reads it.
_JSON_TYPES: Dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "Optional[str]": lambda v: v is None or isinstance(v, str),
    "Optional[int]": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "List[str]": _is_str_list,
    "Dict[str, int]": lambda v: isinstance(v, dict) and all(isinstance(x, int) for x in v.values()),
    "Dict[str, Optional[str]]": lambda v: (
        isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values())
    ),
}


def _build(cls: Any, data: Any, where: str) -> Any:
    """Rebuild dataclass ``cls`` from a JSON object, refusing unknown or missing fields and wrong types by name."""
    if not isinstance(data, dict):
        raise LaunchError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LaunchError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for name, value in data.items():
        check = _JSON_TYPES.get(str(known[name].type))
        if check is not None and not check(value):
            raise LaunchError(f"{where}.{name}: {value!r} is not of type {known[name].type}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise LaunchError(f"{where}: {exc}") from None


def _launcher_from(data: Any, where: str) -> LauncherSpec:
    spec: LauncherSpec = _build(LauncherSpec, data, where)
    spec.hosts = [_build(HostSource, h, f"{where}.hosts") for h in spec.hosts]
    return spec


def plan_to_json(plan: Plan) -> str:
    # Why one file serves every rank: a plan holds only what the config and the command line say (the
    # launcher's variable *names*, export names, master.* settings, the bind *policy*, script, args, env.*).
    # Everything rank- or node-dependent (the rank numbers, MASTER_ADDR/PORT, the cores a rank gets) is computed
    # per rank by ``resolve`` from that rank's environment. What the plan does fix at save time is the
    # interpreter (``sys.executable`` or python=) and a relative script path checked against the current
    # directory: ranks must see the same interpreter path and start in the same directory (mpiexec's default).
    return json.dumps({"format": PLAN_FORMAT, "plan": asdict(plan)}, indent=1, sort_keys=True)


def plan_from_json(text: str, where: str = "plan") -> Plan:
    if len(text) > MAX_PLAN_CHARS:
        raise LaunchError(f"{where}: not a ds-helper plan (larger than {MAX_PLAN_CHARS} characters)")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LaunchError(f"{where}: not a ds-helper plan (invalid JSON: {exc})") from None
    except RecursionError:
        raise LaunchError(f"{where}: not a ds-helper plan (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or "plan" not in data:
        found = data.get("format") if isinstance(data, dict) else None
        raise LaunchError(f"{where}: plan format {found!r} is not the format {PLAN_FORMAT} this ds-helper reads")
    plan: Plan = _build(Plan, data["plan"], where)
    if not isinstance(plan.launchers, list):
        raise LaunchError(f"{where}.launchers: {plan.launchers!r} is not a list")
    plan.launchers = [_launcher_from(item, f"{where}.launchers") for item in plan.launchers]
    if plan.fallback is not None:
        plan.fallback = _launcher_from(plan.fallback, f"{where}.fallback")
    plan.export = _build(ExportSpec, plan.export, f"{where}.export")
    plan.master = _build(MasterSpec, plan.master, f"{where}.master")
    plan.bind = _build(BindSpec, plan.bind, f"{where}.bind")
    plan.log = _build(LogSpec, plan.log, f"{where}.log")
    try:
        check_plan(plan)
    except LaunchError as exc:
        raise LaunchError(f"{where}: {exc}") from None
    return plan


MAX_PLAN_CHARS = 16 << 20
"""A plan is a screenful of JSON (15,000 script arguments are about 1 MB): bounds what a wrong file costs."""


def load_plan(path: str) -> Plan:
    """``--plan FILE``: the plan saved by ``--save-plan``, or one ``LaunchError`` saying what is wrong with it."""
    where = f"--plan {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_PLAN_CHARS + 1)  # /dev/zero or a huge file: read no more than a plan can be
    except OSError as exc:
        raise LaunchError(f"{where}: cannot read the plan: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LaunchError(f"{where}: not a ds-helper plan (not UTF-8 text)") from None
    return plan_from_json(text, where)


def _holds_plan(path: str) -> bool:
    """Whether ``path`` is a regular file holding a ds-helper plan, of this format or another (an older one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except OSError:
        return False
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        raw = handle.read(MAX_PLAN_CHARS + 1)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    return (
        isinstance(data, dict)
        and set(data) == {"format", "plan"}
        and isinstance(data["format"], int)
        and isinstance(data["plan"], dict)
    )


def _replaceable(path: str, target: str, where: str) -> bool:
    """Whether ``target`` (``path`` with symlinks followed) exists; refuses anything that is not an earlier plan."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise LaunchError(f"{where}: a symlink to {target}, which does not exist: not writing there") from None
        return False
    except OSError as exc:
        raise LaunchError(f"{where}: cannot write the plan: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise LaunchError(f"{where}: {target} is {kind}; a plan replaces only an earlier ds-helper plan")
    if not _holds_plan(target):
        raise LaunchError(
            f"{where}: {target} exists and is not a ds-helper plan; refusing to replace it (choose a new file name)"
        )
    return True


def save_plan(plan: Plan, path: str) -> None:
    """Write the plan as a new file, or over an earlier ds-helper plan; never over anything else.

    The plan is written to a fresh temporary file in the target's folder (O_EXCL: nobody else's file) and moved
    into place in one step, so a rank reading it sees the old plan or the new one. A new name is claimed with
    link(), which fails rather than replace a file that appeared meanwhile; an earlier plan is checked again
    just before it is replaced. A symlink to an earlier plan keeps pointing at it: the target is rewritten.
    """
    where = f"--save-plan {path}"
    target = os.path.realpath(path)
    _replaceable(path, target, where)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise LaunchError(f"{where}: cannot write the plan: {exc.strerror}") from None
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(plan_to_json(plan) + "\n")
        _move_into_place(tmp, path, target, where)
    except OSError as exc:
        raise LaunchError(f"{where}: cannot write the plan: {exc.strerror}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _move_into_place(tmp: str, path: str, target: str, where: str) -> None:
    if _replaceable(path, target, where):
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if the name was taken since: never replaces a file that is not ours
    except FileExistsError:
        raise LaunchError(f"{where}: {target} appeared while the plan was written; nothing replaced") from None
    except OSError:  # a file system without hard links: the last check above is as close as it gets
        os.rename(tmp, target)


def _command(config: Config) -> List[str]:
    """The command before its arguments; a missing script is caught here, before any rank starts."""
    if not config.script:
        raise LaunchError("no script: give one as script=train.py (or module=true script=pkg.mod)")
    if config.no_python:
        if config.module:
            raise LaunchError("module=true and no_python=true cannot be combined")
        return [config.script]  # looked up on the script's PATH when the rank execs
    python = config.python or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise LaunchError(f"python={python}: not an executable file")
    flags = ["-u"] if config.unbuffered else []
    if config.module:
        return [python, *flags, "-m", config.script]
    if not os.path.isfile(config.script):
        raise LaunchError(f"script {config.script!r} not found (from {os.getcwd()})")
    return [python, *flags, config.script]


def python_target(argv: List[str]) -> Tuple[bool, str, bool]:
    """(module?, script or module name, unbuffered?) of a command built by ``_command`` for Python."""
    rest = argv[1:]
    if "-m" in rest:
        return True, rest[rest.index("-m") + 1], "-u" in rest
    return False, rest[-1], "-u" in rest


def _string_args(args: List[Any]) -> List[str]:
    """The script's arguments: each one string (Hydra lets ``args=[a,[b]]`` through as a nested list)."""
    for arg in args:
        if isinstance(arg, (list, dict)):
            kind = "a list" if isinstance(arg, list) else "a mapping"
            raise LaunchError(f"args: {arg!r} is {kind} where a string belongs (quote it)")
    return [str(arg) for arg in args]


def make_plan(config: Config, candidates: List[LauncherSpec]) -> Plan:
    """The plan of a composed config; ``candidates`` are every launcher option when launcher=auto."""
    auto = config.launcher.name == "auto"
    evidence: List[str] = []
    if auto:
        detectable = [spec for spec in candidates if spec.detect]
        launchers = sorted(detectable, key=lambda spec: -spec.priority)
        fallback = next((spec for spec in candidates if spec.name == "local"), None)
        # A manager's first signature variable (SLURM_STEP_ID, not SLURM_PROCID, which an sbatch script's
        # own environment has too), and the rank variables several managers share (auto.yaml).
        evidence = sorted({spec.detect[0] for spec in launchers} | set(config.launcher.evidence))
    else:
        launchers, fallback = [config.launcher], None
    check_log(config.log)  # before the script's path: the config's own mistakes first
    plan = Plan(
        launchers=launchers,
        auto=auto,
        fallback=fallback,
        evidence=evidence,
        argv=_command(config),
        args=_string_args(config.args),
        env=dict(config.env),
        export=config.export,
        master=config.master,
        bind=bind.settled(config.bind),
        log=config.log,
        dry_run=config.dry_run,
        die_with_manager=config.die_with_manager,
        run_mode=config.run_mode,
    )
    check_plan(plan)
    return plan
