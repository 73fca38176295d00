"""A launch plan: everything about a launch that is the same on every rank, as plain serialisable data.

``compose`` turns the user's YAML and overrides into a :class:`Plan` once; ``resolve`` then combines the plan with
one rank's environment. Nothing here depends on a rank, a node or the environment, which is what lets a plan be
saved as JSON and reused by thousands of ranks without Hydra. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

from ds_helper import bind
from ds_helper.errors import LaunchError
from ds_helper.schema import (
    BindSpec,
    Config,
    ExportSpec,
    HostSource,
    LauncherSpec,
    LogSpec,
    MasterSpec,
    StartSpec,
)

PLAN_VAR = "DS_HELPER_PLAN"
"""The one variable that carries a job's plan to every rank (ds_helper.job); never reaches the script."""

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
    job_ranks: Optional[int] = None
    """The job's layout (job.* keys, or what ds-helper chose when it started the job): each rank checks the
    manager placed it so, and derives NODE_RANK from it (resolve.apply_job_layout)."""
    job_nodes: Optional[int] = None
    job_ranks_per_node: Optional[int] = None
    job_hosts: List[str] = field(default_factory=list)
    """In order; the first one is MASTER_ADDR of a job on several nodes."""
    job_port: Optional[int] = None
    """MASTER_PORT chosen once by the job side, the same on every rank."""


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
    spec.start = _build(StartSpec, spec.start, f"{where}.start")
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
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LaunchError(f"{where}: not a ds-helper plan (invalid JSON: {exc})") from None
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
    for name in ("job_ranks", "job_nodes", "job_ranks_per_node", "job_port"):
        value = getattr(plan, name)
        if value is not None and value < 1:
            raise LaunchError(f"{where}.{name}: {value} is not a positive number")
    return plan


def load_plan(path: str) -> Plan:
    """``--plan FILE``: the plan saved by ``--save-plan``, or one ``LaunchError`` saying what is wrong with it."""
    where = f"--plan {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise LaunchError(f"{where}: cannot read the plan: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LaunchError(f"{where}: not a ds-helper plan (not UTF-8 text)") from None
    plan = plan_from_json(text, where)
    if not plan.argv:
        raise LaunchError(f"{where}: damaged plan: empty command")
    return plan


def save_plan(plan: Plan, path: str) -> None:
    """Write the plan atomically: a rank that reads it while it is being rewritten sees the old or the new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(plan_to_json(plan) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise LaunchError(f"--save-plan {path}: cannot write the plan: {exc.strerror}") from None


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


LOG_PLACEHOLDERS = {"rank": 0, "local_rank": 0, "node_rank": 0}


def _check_log(log: LogSpec) -> None:
    """Bad file name templates fail at compose time, not on every rank; files stay inside log.dir."""
    for key in ("out", "err", "prefix"):
        template = getattr(log, key)
        try:
            name = template.format(**LOG_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as exc:
            raise LaunchError(
                f"log.{key}={template!r}: bad placeholder {exc} (use {{rank}}, {{local_rank}}, {{node_rank}})"
            ) from None
        if key != "prefix" and (not name or "/" in name or name in (".", "..")):
            raise LaunchError(f"log.{key}={template!r}: a file name inside log.dir, without '/'")
    if log.dir == "":
        raise LaunchError("log.dir is empty: give a folder, or leave it unset (null)")
    if log.grace < 0:
        raise LaunchError(f"log.grace={log.grace}: must not be negative")


RUN_MODES = ("exec", "inprocess")


def python_target(argv: List[str]) -> Tuple[bool, str, bool]:
    """(module?, script or module name, unbuffered?) of a command built by ``_command`` for Python."""
    rest = argv[1:]
    if "-m" in rest:
        return True, rest[rest.index("-m") + 1], "-u" in rest
    return False, rest[-1], "-u" in rest


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
    _check_log(config.log)
    if config.run_mode not in RUN_MODES:
        raise LaunchError(f"run_mode={config.run_mode}: expected one of {', '.join(RUN_MODES)}")
    return Plan(
        launchers=launchers,
        auto=auto,
        fallback=fallback,
        evidence=evidence,
        argv=_command(config),
        args=[str(arg) for arg in config.args],
        env=dict(config.env),
        export=config.export,
        master=config.master,
        bind=bind.settled(config.bind),
        log=config.log,
        dry_run=config.dry_run,
        die_with_manager=config.die_with_manager,
        run_mode=config.run_mode,
    )
