"""A launch plan: everything about a launch that is the same on every rank, as plain serialisable data.

``compose`` turns the user's YAML and overrides into a :class:`Plan` once; ``resolve`` then combines the plan with
one rank's environment. Nothing here depends on a rank, a node or the environment, which is what lets a plan be
saved as JSON and reused by thousands of ranks without Hydra. Standard library only.
"""

import os
import stat
import sys

from ds_helper.rank.checks import check_log, check_plan
from ds_helper.rank.errors import LaunchError

# No ``from __future__ import annotations`` in this module: the field annotations of the classes below are the
# real type objects (``list[str]``, ``str | None``), and the loader checks JSON values against them. Nothing
# here imports typing, dataclasses or re at run time: this module is on every rank's start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    Reader = Callable[[Any, str], Any]

    from ds_helper.compose.schema import Config
    from ds_helper.compose.schema import LauncherSpec as SchemaLauncherSpec
else:
    Any = object  # a field that takes any JSON value (bind.cores, bind.gpus); mypy reads typing.Any

PLAN_VAR = "DS_HELPER_PLAN"
"""The one variable that carries a job's plan to every rank (ds_helper.job.launch); never reaches the script."""

PLAN_FORMAT = 3
"""Bumped whenever a field changes meaning; a plan of another format is refused, never half-read."""

RANK_FIELDS = ("rank", "local_rank", "world_size", "local_world_size", "node_rank")
"""The five numbers a process manager tells each rank, in the order they are resolved and shown."""

_UNION: Any = type(int | None)  # types.UnionType and types.GenericAlias, without importing types
_GENERIC: Any = type(list[int])


def _type_name(kind: Any) -> str:
    return "any value" if kind is object else kind.__name__ if isinstance(kind, type) else str(kind)


def _refuse(kind: Any, value: Any, where: str) -> Any:
    raise LaunchError(f"{where}: {value!r} is not of type {_type_name(kind)}")


# What a JSON value of each scalar field type looks like (JSON's true is not a number; an int is a float).
_SCALARS: "dict[Any, Callable[[Any], bool]]" = {
    str: lambda value: isinstance(value, str),
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    object: lambda value: True,
}


def _reader(kind: Any, field: str) -> "Reader":
    """A function reading a JSON value as type ``kind`` (a record is rebuilt), or refusing it by name.

    Built once per field when its class is defined, so a type the loader cannot check fails there, not on a rank.
    """
    if isinstance(kind, type) and issubclass(kind, Record):
        return lambda value, where: value if isinstance(value, kind) else kind.from_data(value, where)
    if kind in _SCALARS:
        valid = _SCALARS[kind]
        return lambda value, where: value if valid(value) else _refuse(kind, value, where)
    if type(kind) is _UNION and len(kind.__args__) == 2 and kind.__args__[1] is type(None):
        inner = _reader(kind.__args__[0], field)
        return lambda value, where: None if value is None else inner(value, where)
    if type(kind) is _GENERIC and kind.__origin__ is list:
        return _list_reader(kind, _reader(kind.__args__[0], field), _SCALARS.get(kind.__args__[0]))
    if type(kind) is _GENERIC and kind.__origin__ is dict and kind.__args__[0] is str:
        return _dict_reader(kind, _reader(kind.__args__[1], field), _SCALARS.get(kind.__args__[1]))
    raise TypeError(
        f"{field}: field type {kind!r} is not supported in a plan (str, int, float, bool, Any, "
        "a record, X | None, list[X], dict[str, X])"
    )


# A list or dict of scalars is checked in one pass; item by item (naming the bad one) only when that fails.


def _list_reader(kind: Any, item: "Reader", valid: "Callable[[Any], bool] | None") -> "Reader":
    def read(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            _refuse(kind, value, where)
        if valid is not None and all(map(valid, value)):
            return value
        return [item(entry, f"{where}[{index}]") for index, entry in enumerate(value)]

    return read


def _dict_reader(kind: Any, item: "Reader", valid: "Callable[[Any], bool] | None") -> "Reader":
    def read(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            _refuse(kind, value, where)
        if valid is not None and all(map(valid, value.values())):
            return value
        return {key: item(entry, f"{where}.{key}") for key, entry in value.items()}

    return read


class Record:
    """Plain data read from JSON: each field an annotated class attribute, checked against its type on load.

    What ``dataclasses`` gave the plan (fields, equality, repr) for a fraction of the import cost. Adding a
    field to a record is one annotated line; ``tests/test_plan.py`` holds the records equal to the schema.
    """

    FIELDS: "dict[str, Any]" = {}
    """Field name -> type, from the class's own annotations (filled in for each subclass)."""
    _READERS: "dict[str, Reader]" = {}

    def __init_subclass__(cls) -> None:
        cls.FIELDS = dict(cls.__annotations__)
        cls._READERS = {name: _reader(kind, f"{cls.__name__}.{name}") for name, kind in cls.FIELDS.items()}

    def __init__(self, **values: Any) -> None:
        self._fill(values, type(self).__name__)

    @classmethod
    def from_data(cls, data: Any, where: str) -> "Any":
        """The record a JSON object describes; unknown, missing or mistyped fields are refused by name."""
        if not isinstance(data, dict):
            raise LaunchError(f"{where}: expected an object, got {type(data).__name__}")
        record = cls.__new__(cls)
        record._fill(data, where)
        return record

    def _fill(self, data: "dict[str, Any]", where: str) -> None:
        unknown = sorted(set(data) - set(self.FIELDS))
        if unknown:
            raise LaunchError(f"{where}: unknown field(s) {', '.join(unknown)}")
        missing = [name for name in self.FIELDS if name not in data]
        if missing:
            raise LaunchError(f"{where}: missing field(s) {', '.join(missing)}")
        for name, read in self._READERS.items():
            setattr(self, name, read(data[name], f"{where}.{name}"))

    def to_data(self) -> "dict[str, Any]":
        """The record as JSON-ready data (nested records as objects)."""
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_data() == other.to_data()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_data()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# The plan's copies of the schema's classes (ds_helper/schema.py holds their meaning and help): the same fields
# with the same types, which tests/test_plan.py checks, so that a rank never imports the schema's dataclasses.


class HostSource(Record):
    var: str
    format: str
    file: bool
    skip: int


class StartSpec(Record):
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


class Plan(Record):
    """What every rank of one launch shares. A new field is one line here (and where make_plan fills it)."""

    launchers: list[LauncherSpec]
    """The manager to read, or with launcher=auto every candidate in the order auto tries them."""
    auto: bool
    fallback: LauncherSpec | None
    """With launcher=auto: used when no manager's variables are present at all (a standalone process)."""
    evidence: list[str]
    """With launcher=auto: any of these set means a manager started this rank, so no standalone fallback."""
    argv: list[str]
    """The command before any arguments: [python, -u, script], [python, -u, -m, module] or [program]."""
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
    import json

    return json.dumps({"format": PLAN_FORMAT, "plan": plan.to_data()}, indent=1, sort_keys=True)


def _loads(text: str) -> Any:
    """``json.loads``, without importing the ``json`` package (its decoder and encoder import ``re``) on success.

    CPython's C scanner, which ``json.loads`` itself runs, reads a well-formed plan. Anything else (a damaged
    file, another Python without ``_json``) goes through ``json.loads``, whose messages say what is wrong; the
    C scanner's own errors need ``json.decoder`` imported first.
    """
    try:
        from _json import make_scanner

        scan = make_scanner(_ScanSettings())  # type: ignore[arg-type]  # typeshed: any object with its fields
        value, end = scan(text, len(text) - len(text.lstrip(_JSON_SPACE)))
        if not text[end:].strip(_JSON_SPACE):
            return value
    except Exception:  # re-read below, for json's message
        pass
    import json

    return json.loads(text, parse_constant=_constant)


_JSON_SPACE = " \t\n\r"


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _ScanSettings:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``: strict JSON, plain dicts, no NaN."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)


def plan_from_data(data: Any, where: str) -> Plan:
    """The plan a JSON document's ``plan`` object describes, every field checked (make_plan checks the same way)."""
    plan: Plan = Plan.from_data(data, where)
    for name in ("job_ranks", "job_nodes", "job_ranks_per_node", "job_port"):
        value = getattr(plan, name)
        if value is not None and value < 1:
            raise LaunchError(f"{where}.{name}: {value} is not a positive number")
    return plan


def plan_from_json(text: str, where: str = "plan") -> Plan:
    if len(text) > MAX_PLAN_CHARS:
        raise LaunchError(f"{where}: not a ds-helper plan (larger than {MAX_PLAN_CHARS} characters)")
    try:
        data = _loads(text)
    except ValueError as exc:
        raise LaunchError(f"{where}: not a ds-helper plan (invalid JSON: {exc})") from None
    except RecursionError:
        raise LaunchError(f"{where}: not a ds-helper plan (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or "plan" not in data:
        found = data.get("format") if isinstance(data, dict) else None
        raise LaunchError(f"{where}: plan format {found!r} is not the format {PLAN_FORMAT} this ds-helper reads")
    plan = plan_from_data(data["plan"], where)
    try:
        check_plan(plan)  # as strictly as make_plan checks a composed one
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
    import json  # only when replacing a file: not on a rank's path

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


def _command(config: "Config") -> list[str]:
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
    if os.path.isdir(config.script):  # python runs a folder's (or a zip's) __main__.py
        if not os.path.isfile(os.path.join(config.script, "__main__.py")):
            raise LaunchError(f"script {config.script!r} is a folder without __main__.py")
    elif not os.path.isfile(config.script):
        raise LaunchError(f"script {config.script!r} not found (from {os.getcwd()})")
    return [python, *flags, config.script]


def python_target(argv: list[str]) -> tuple[bool, str, bool]:
    """(module?, script or module name, unbuffered?) of a command built by ``_command`` for Python."""
    rest = argv[1:]
    if "-m" in rest:
        return True, rest[rest.index("-m") + 1], "-u" in rest
    return False, rest[-1], "-u" in rest


def _string_args(args: "list[Any]") -> list[str]:
    """The script's arguments: each one string (Hydra lets ``args=[a,[b]]`` through as a nested list)."""
    for arg in args:
        if isinstance(arg, (list, dict)):
            kind = "a list" if isinstance(arg, list) else "a mapping"
            raise LaunchError(f"args: {arg!r} is {kind} where a string belongs (quote it)")
    return [str(arg) for arg in args]


def make_plan(config: "Config", candidates: "list[SchemaLauncherSpec]") -> Plan:
    """The plan of a composed config; ``candidates`` are every launcher option when launcher=auto."""
    auto = config.launcher.name == "auto"
    evidence: list[str] = []
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
    from dataclasses import asdict  # composing: the schema's dataclasses, turned into the plan's plain data

    from ds_helper.rank import bind

    data = {
        "launchers": [asdict(spec) for spec in launchers],
        "auto": auto,
        "fallback": None if fallback is None else asdict(fallback),
        "evidence": evidence,
        "argv": _command(config),
        "args": _string_args(config.args),
        "env": dict(config.env),
        "export": asdict(config.export),
        "master": asdict(config.master),
        "bind": asdict(bind.settled(config.bind)),
        "log": asdict(config.log),
        "dry_run": config.dry_run,
        "die_with_manager": config.die_with_manager,
        "run_mode": config.run_mode,
        # The job's layout: set by ds_helper.job.launch (with_layout) when job.* keys say something.
        "job_ranks": None,
        "job_nodes": None,
        "job_ranks_per_node": None,
        "job_hosts": [],
        "job_port": None,
    }
    plan = plan_from_data(data, "plan")
    check_plan(plan)
    return plan
