"""Making a plan from a composed config, and saving it: the compose side fills the rank side's records.

``make_plan`` turns the schema's dataclasses into the plan's plain records (``rank/plan.py``) and checks them as
the plan loader does; ``save_plan`` writes one for ``--plan`` (never over a file that is not an earlier plan).
"""

import os
import stat
import sys
from dataclasses import asdict, replace
from typing import Any

from ds_helper.compose.schema import BindSpec, Config, LauncherSpec
from ds_helper.rank.bind.cpuset import format_cpus, parse_cpus
from ds_helper.rank.checks import check_log, check_plan
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.load import MAX_PLAN_CHARS
from ds_helper.rank.plan import LogSpec, Plan, plan_from_data, plan_to_json


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
    if path.endswith(os.sep):
        raise LaunchError(f"{where}: ends with '{os.sep}', so it names a folder; give the plan's file name")
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


def _command(config: Config) -> dict[str, Any]:
    """What each rank runs (``rank/plan.py``, CommandSpec); a missing script is caught here, before any rank starts."""
    if not config.script:
        raise LaunchError("no script: give one as script=train.py (or module=true script=pkg.mod)")
    if config.no_python:
        if config.module:
            raise LaunchError("module=true and no_python=true cannot be combined")
        # looked up on the script's PATH when the rank execs
        return {"kind": "program", "target": config.script, "python": "", "unbuffered": False}
    python = config.python or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise LaunchError(f"python={python}: not an executable file")
    kind = "module" if config.module else "script"
    if kind == "script" and os.path.isdir(config.script):  # python runs a folder's (or a zip's) __main__.py
        if not os.path.isfile(os.path.join(config.script, "__main__.py")):
            raise LaunchError(f"script {config.script!r} is a folder without __main__.py")
    elif kind == "script" and not os.path.isfile(config.script):
        raise LaunchError(f"script {config.script!r} not found (from {os.getcwd()})")
    elif kind == "script" and not os.access(config.script, os.R_OK):
        raise LaunchError(f"script {config.script!r} is not readable")
    return {"kind": kind, "target": config.script, "python": python, "unbuffered": config.unbuffered}


def _string_args(args: list[Any]) -> list[str]:
    """The script's arguments: each one string (Hydra lets ``args=[a,[b]]`` through as a nested list)."""
    for arg in args:
        if isinstance(arg, (list, dict)):
            kind = "a list" if isinstance(arg, list) else "a mapping"
            raise LaunchError(f"args: {arg!r} is {kind} where a string belongs (quote it)")
    return [str(arg) for arg in args]


def settled_binding(spec: BindSpec) -> BindSpec:
    """The bind settings as every rank will read them: policy 'auto' decided, the core list checked and canonical."""
    cores = None if spec.cores is None else format_cpus(parse_cpus(spec.cores))
    policy = spec.policy
    if policy == "auto":  # bind=default: binding is on exactly when a core list is given
        policy = "none" if cores is None else "cores"
    return replace(spec, policy=policy, cores=cores)


def make_plan(config: Config, candidates: list[LauncherSpec]) -> Plan:
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
    check_log(LogSpec(**asdict(config.log)))  # before the script's path: the config's own mistakes first
    data = {
        "launchers": [asdict(spec) for spec in launchers],
        "auto": auto,
        "fallback": None if fallback is None else asdict(fallback),
        "evidence": evidence,
        "command": _command(config),
        "args": _string_args(config.args),
        "env": dict(config.env),
        "export": asdict(config.export),
        "master": asdict(config.master),
        "bind": asdict(settled_binding(config.bind)),
        "log": asdict(config.log),
        "dry_run": config.dry_run,
        "die_with_manager": config.die_with_manager,
        "run_mode": config.run_mode,
        # The job's layout: set by the job side (job/start.py, with_layout) when job.* keys say something.
        "job_ranks": None,
        "job_nodes": None,
        "job_ranks_per_node": None,
        "job_hosts": [],
        "job_port": None,
    }
    plan = plan_from_data(data, "plan")
    check_plan(plan)
    return plan
