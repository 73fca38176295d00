"""A launch plan: everything about a launch that is the same on every rank, as plain serialisable data.

The compose side (``compose/planner.py``) fills a :class:`Plan` once from the user's YAML and overrides;
``rank/resolve.py`` then combines it with one rank's environment, and ``rank/load.py`` reads a saved one.
Nothing here depends on a rank, a node or the environment, which is what lets a plan be saved as JSON and reused
by thousands of ranks without Hydra. The records are the rank side's contract: standard library only.
"""

from ds_helper.rank.errors import LaunchError
from ds_helper.rank.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
else:
    Any = object  # a field that takes any JSON value (bind.cores, bind.gpus); mypy reads typing.Any

# No ``from __future__ import annotations`` in this module: the field annotations of the records below are the
# real type objects (``list[str]``, ``str | None``), which the loader checks JSON values against. Nothing here
# imports typing, dataclasses or re at run time: this module is on every rank's start-up path.

PLAN_VAR = "DS_HELPER_PLAN"
"""The one variable that carries a job's plan to every rank (job/launch.py); never reaches the script."""

PLAN_FORMAT = 5
"""Bumped whenever a field changes meaning; a plan of another format is refused, never half-read."""

RANK_FIELDS = ("rank", "local_rank", "world_size", "local_world_size", "node_rank")
"""The five numbers a process manager tells each rank, in the order they are resolved and shown."""

# The plan's copies of the schema's classes (compose/schema.py holds their meaning and help): the same fields
# with the same types, which tests/test_plan.py checks, so that a rank never imports the schema's dataclasses.


class HostSource(Record):
    var: str
    format: str
    file: bool
    skip: int


class ExitCodesSpec(Record):
    args: list[str]
    start: str
    line: str
    host: str
    wait_status: bool


class StartSpec(Record):
    local: bool
    program: str | None
    cannot: str
    args: list[str]
    ranks: list[str]
    nodes: list[str]
    ranks_per_node: list[str]
    hosts: list[str]
    host_form: str
    host_join: str | None
    host_per_rank: bool
    needs_hosts: bool
    env: list[str]
    no_bind: list[str]
    allocation: list[str]
    label: list[str]
    signals: dict[str, str | None]
    failure: str
    exit_codes: ExitCodesSpec


class LauncherSpec(Record):
    name: str
    description: str
    detect: list[str]
    exclude: list[str]
    priority: int
    rank: list[str]
    local_rank: list[str]
    world_size: list[str]
    local_world_size: list[str]
    node_rank: list[str]
    fixed: dict[str, int]
    hosts: list[HostSource]
    job_id: list[str]
    evidence: list[str]
    inside: list[str]
    start: StartSpec


class ExportSpec(Record):
    rank: list[str]
    local_rank: list[str]
    world_size: list[str]
    local_world_size: list[str]
    node_rank: list[str]


class MasterSpec(Record):
    addr: str | None
    port: int | None
    default_port: int
    port_base: int
    port_span: int


class LogSpec(Record):
    all_ranks: bool
    quiet: bool
    dir: str | None
    out: str
    err: str
    tee: bool
    prefix: str
    grace: float
    label: bool
    show: list[int] | None


class BindSpec(Record):
    description: str
    policy: str
    cores: Any
    physical: bool
    remainder: str
    memory: str
    strict: bool
    gpus: Any
    gpu_vendor: str
    omp_threads: bool


class CommandSpec(Record):
    """What a rank runs: a Python script or module under an interpreter, or a program looked up on PATH."""

    kind: str
    """One of COMMAND_KINDS: ``script`` (python SCRIPT), ``module`` (python -m MODULE), ``program`` (no_python)."""
    target: str
    """The script's path, the module's name or the program."""
    python: str
    """The interpreter (empty for a program)."""
    unbuffered: bool
    """``python -u``."""


COMMAND_KINDS = ("script", "module", "program")


def command_argv(command: CommandSpec) -> list[str]:
    """The command line before the script's arguments: [python, -u, script], [python, -u, -m, module] or [program]."""
    if command.kind == "program":
        return [command.target]
    flags = ["-u"] if command.unbuffered else []
    if command.kind == "module":
        return [command.python, *flags, "-m", command.target]
    return [command.python, *flags, command.target]


class Plan(Record):
    """What every rank of one launch shares. A new field is one line here (and where make_plan fills it)."""

    launchers: list[LauncherSpec]
    """The manager to read, or with launcher=auto every candidate in the order auto tries them."""
    auto: bool
    fallback: LauncherSpec | None
    """With launcher=auto: used when no manager's variables are present at all (a standalone process)."""
    evidence: list[str]
    """With launcher=auto: any of these set means a manager started this rank, so no standalone fallback."""
    command: CommandSpec
    """What each rank becomes, before its arguments (``command_argv``)."""
    args: list[str]
    """Script arguments from the config; those given after ``--`` are appended at resolve time."""
    env: dict[str, str | None]
    """Variables to set (a value) or unset (None) for the script, on top of the rank variables."""
    export: ExportSpec
    master: MasterSpec
    bind: BindSpec
    log: LogSpec
    dry_run: bool
    die_with_manager: bool
    run_mode: str
    job_ranks: int | None
    """The job's layout (job.* keys, or what ds-helper chose when it started the job): each rank checks the
    manager placed it so, and derives NODE_RANK from it (resolve.apply_job_layout)."""
    job_nodes: int | None
    job_ranks_per_node: int | None
    job_hosts: list[str]
    """In order; the first one is MASTER_ADDR of a job on several nodes."""
    job_port: int | None
    """MASTER_PORT chosen once by the job side, the same on every rank."""


def plan_to_json(plan: Plan) -> str:
    # Why one file serves every rank: a plan holds only what the config and the command line say (the
    # launcher's variable *names*, export names, master.* settings, the bind *policy*, script, args, env.*).
    # Everything rank- or node-dependent (the rank numbers, MASTER_ADDR/PORT, the cores a rank gets) is computed
    # per rank by ``resolve`` from that rank's environment. What the plan does fix at save time is the
    # interpreter (``sys.executable`` or python=) and a relative script path checked against the current
    # directory: ranks must see the same interpreter path and start in the same directory (mpiexec's default).
    #
    # Compact and UTF-8: a job's plan travels in one environment variable, which Linux limits to 128 KiB
    # (job/start.py, MAX_ARG_STRLEN); indentation and \u escapes of non-ASCII text made some plans three times
    # larger. A lone surrogate (a byte of an argument that is not UTF-8, as Python's surrogateescape reads it)
    # cannot be written as UTF-8, so it alone stays a \u escape: the loader reads it back to the same character,
    # and the rank's execve turns that into the same byte.
    import json

    text = json.dumps(
        {"format": PLAN_FORMAT, "plan": plan.to_data()}, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )
    if text.isascii():
        return text
    return "".join(f"\\u{ord(char):04x}" if "\ud800" <= char <= "\udfff" else char for char in text)


def plan_from_data(data: Any, where: str) -> Plan:
    """The plan a JSON document's ``plan`` object describes, every field checked (make_plan checks the same way)."""
    plan: Plan = Plan.from_data(data, where)
    for name in ("job_ranks", "job_nodes", "job_ranks_per_node", "job_port"):
        value = getattr(plan, name)
        if value is not None and value < 1:
            raise LaunchError(f"{where}.{name}: {value} is not a positive number")
    return plan
