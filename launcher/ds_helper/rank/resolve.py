"""One rank's launch, from the plan and this process's environment: pure functions, no I/O of their own.

Env in, ranks / MASTER_* / command / child env out. Files named by the environment (PBS's node file, LSF's rank
file) are read through the ``read_file`` argument, so tests pass recorded contents and nothing here touches the
machine. Standard library only: this runs on every rank.
"""

from __future__ import annotations

import os

from ds_helper.rank import bind, hostlist
from ds_helper.rank.checks import MAX_COUNT, MAX_PORT, is_env_name
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.plan import RANK_FIELDS, command_argv
from ds_helper.rank.records import Value

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

    # binding's modules are loaded only when binding is asked for (or shown by a dry run)
    from ds_helper.rank.bind.placement import Placement
    from ds_helper.rank.plan import HostSource, LauncherSpec, MasterSpec, Plan

    Env = Mapping[str, str]
    ReadFile = Callable[[str], str]

# What a missing rank's error lists as present: variables that look like some manager's rank numbers
# (PMI_RANK, MPI_LOCALRANKID, SLURM_LOCALID, FLUX_JOB_SIZE, ...), whichever manager set them.
_RANK_LIKE = ("RANK", "SIZE", "LOCALID", "NODEID", "LOCAL_ID")


class Change(Value):
    """One variable the script's environment gets that differs from ds-helper's own, and why."""

    __slots__ = ("name", "value", "why")

    def __init__(self, name: str, value: Optional[str], why: str) -> None:
        self.name = name
        self.value = value  # None: unset
        self.why = why


class Ranks(Value):
    """The five numbers of one rank, each with the source it came from (None where the manager is silent)."""

    __slots__ = ("values", "sources", "fixed")

    def __init__(self, values: Dict[str, Optional[int]], sources: Dict[str, str], fixed: Tuple[str, ...] = ()) -> None:
        self.values = values
        self.sources = sources
        self.fixed = fixed
        """The numbers the launcher itself fixed (launcher=local's rank 0 of 1): no manager's variable gave them."""

    def __getitem__(self, name: str) -> Optional[int]:
        return self.values[name]


class Launch(Value):
    """Everything the runner needs to become the script, and what the dry run shows."""

    __slots__ = ("launcher", "why", "ranks", "argv", "env", "changes", "notes", "placement", "layout_table", "managed")

    def __init__(
        self,
        launcher: str,
        why: str,
        ranks: Ranks,
        argv: List[str],
        env: Dict[str, str],
        changes: List[Change],
        notes: Optional[List[str]] = None,
        placement: Optional[Placement] = None,
        layout_table: str = "",
        managed: bool = False,
    ) -> None:
        self.launcher = launcher
        self.why = why
        self.ranks = ranks
        self.argv = argv
        self.env = env
        self.changes = changes
        self.notes = [] if notes is None else notes
        self.placement = placement
        """CPU affinity and memory policy to apply before the exec (None: leave the process as it is)."""
        self.layout_table = layout_table
        """For the dry run: where every local rank of this node goes."""
        self.managed = managed
        """A process manager (or ds-helper's job side) started this rank: its rank came from the environment."""


# --- detection -----------------------------------------------------------------------------------------------


def _present(env: Env, names: List[str]) -> List[str]:
    return [name for name in names if name in env]


def signature_present(spec: LauncherSpec, env: Env) -> bool:
    """Every variable of the manager's signature (``detect``) set, none of its ``exclude``."""
    return bool(spec.detect) and len(_present(env, spec.detect)) == len(spec.detect) and not _present(env, spec.exclude)


def choose_launcher(plan: Plan, env: Env) -> Tuple[LauncherSpec, str]:
    """The manager that started this rank, and a line saying why it was chosen."""
    if not plan.auto:
        spec = plan.launchers[0]
        return spec, f"launcher={spec.name} (chosen in the config)"
    present = [spec for spec in plan.launchers if signature_present(spec, env)]
    if present:
        spec = present[0]
        for other in present[1:]:
            _refuse_contradiction(spec, other, env)
        return spec, f"auto: {', '.join(spec.detect)} set" + (
            f", none of {', '.join(spec.exclude)}" if spec.exclude else ""
        )
    # Nothing matched. A standalone run is fine, but a manager's variable with no recognisable manager around
    # it means a manager we do not know or a half-broken environment: starting as rank 0 of 1 would be a lie.
    seen = [name for name in plan.evidence if name in env]
    if seen or plan.fallback is None:
        found = ", ".join(f"{name}={env[name]}" for name in seen) or "none"
        options = ", ".join(spec.name for spec in plan.launchers)
        raise LaunchError(
            f"launcher=auto: no process manager recognised (its variables present: {found}); "
            f"choose one with launcher=NAME ({options})"
        )
    return plan.fallback, f"auto: no process manager's variables set, so {plan.fallback.name}"


def _numbers(spec: LauncherSpec, env: Env) -> Dict[str, Tuple[Optional[int], str]]:
    """What a manager's variables say about this rank, field by field; {} when they cannot be read at all."""
    try:
        return {name: _resolve_field(name, spec, env) for name in RANK_FIELDS}
    except LaunchError:
        return {}


def _refuse_contradiction(chosen: LauncherSpec, other: LauncherSpec, env: Env) -> None:
    """Two managers' variables are present: they must agree about this rank, unless ``chosen`` is known to run
    inside ``other`` (its ``inside`` list: mpirun in a Slurm step) and is at least as large a job."""
    mine, theirs = _numbers(chosen, env), _numbers(other, env)
    if not mine or not theirs:
        return
    world, outer_world = mine["world_size"][0], theirs["world_size"][0]
    if other.name in chosen.inside and (world is None or outer_world is None or world >= outer_world):
        return
    for name in RANK_FIELDS:
        (value, source), (other_value, other_source) = mine[name], theirs[name]
        if value is not None and other_value is not None and value != other_value:
            raise LaunchError(
                f"launcher=auto: the variables of two process managers disagree about this rank's {name}: "
                f"{chosen.name} says {value} ({source}), {other.name} says {other_value} ({other_source}); "
                "unset the stale ones, or choose with launcher=NAME"
            )


# --- the five numbers ----------------------------------------------------------------------------------------


def _parse_count(name: str, text: str) -> int:
    value = text.strip()
    if not value.isdigit() or not value.isascii():
        raise LaunchError(f"{name}={text!r} is not a non-negative integer")
    if len(value) > 10 or int(value) >= MAX_COUNT:
        raise LaunchError(f"{name}={text!r} is out of range")
    return int(value)


def _indexed(source: str) -> Optional[Tuple[str, str]]:
    """``LIST[INDEX]`` -> (LIST, INDEX), both variable names; None for a plain variable name."""
    list_name, bracket, rest = source.partition("[")
    index_name = rest[:-1]
    if bracket and rest.endswith("]") and is_env_name(list_name) and is_env_name(index_name):
        return list_name, index_name
    return None


def _read_source(source: str, env: Env) -> Optional[Tuple[int, str]]:
    """The value of one source, or None when it is absent; ``(value, description)``."""
    indexed = _indexed(source)
    if indexed is None:
        if source not in env:
            return None
        return _parse_count(source, env[source]), f"{source}={env[source]}"
    list_name, index_name = indexed
    if list_name not in env or index_name not in env:
        return None
    index = _parse_count(index_name, env[index_name])
    return hostlist.count_at(env[list_name], index), f"{list_name}={env[list_name]} at {index_name}={index}"


def _fixed_by(spec: LauncherSpec) -> str:
    """The source shown for a number the launcher fixes."""
    return f"fixed by launcher={spec.name}"


def _resolve_field(name: str, spec: LauncherSpec, env: Env) -> Tuple[Optional[int], str]:
    """First present source wins; every other present source must say the same."""
    found: List[Tuple[int, str]] = []
    for source in getattr(spec, name):
        value = _read_source(source, env)
        if value is not None:
            found.append(value)
    if not found:
        if name in spec.fixed:
            return spec.fixed[name], _fixed_by(spec)
        return None, ""
    first_value, first_source = found[0]
    disagreeing = [source for value, source in found[1:] if value != first_value]
    if disagreeing:
        raise LaunchError(f"{name}: {first_source} disagrees with {', '.join(disagreeing)}")
    return first_value, first_source


def resolve_ranks(spec: LauncherSpec, env: Env) -> Ranks:
    values: Dict[str, Optional[int]] = {}
    sources: Dict[str, str] = {}
    for name in RANK_FIELDS:
        values[name], sources[name] = _resolve_field(name, spec, env)
    for required in ("rank", "local_rank"):
        if values[required] is None:
            looked = ", ".join(getattr(spec, required)) or "none"
            others = sorted(n for n in env if any(word in n for word in _RANK_LIKE))[:8]
            present = ", ".join(others) or "no rank variables"
            raise LaunchError(f"launcher={spec.name}: {required} not found (looked for {looked}); present: {present}")
    _check_bounds(values, sources)
    # A node rank is safe to derive only when every rank is on this node.
    if values["node_rank"] is None and values["world_size"] is not None:
        if values["local_world_size"] == values["world_size"]:
            values["node_rank"], sources["node_rank"] = 0, "0: every rank is on this node"
    fixed = tuple(name for name in RANK_FIELDS if sources[name] == _fixed_by(spec))
    return Ranks(values, sources, fixed)


def _check_bounds(values: Dict[str, Optional[int]], sources: Dict[str, str]) -> None:
    for index, size in (("rank", "world_size"), ("local_rank", "local_world_size")):
        low, high = values[index], values[size]
        if low is not None and high is not None and low >= high:
            raise LaunchError(f"{index} {low} ({sources[index]}) is not below {size} {high} ({sources[size]})")
    local, world = values["local_world_size"], values["world_size"]
    if local is not None and world is not None and local > world:
        raise LaunchError(
            f"local_world_size {local} ({sources['local_world_size']}) exceeds world_size {world} "
            f"({sources['world_size']})"
        )


def apply_job_layout(plan: Plan, launcher: str, ranks: Ranks) -> None:
    """Check this rank against the job's layout (job.* keys, or the layout ds-helper started the job with) and
    fill in what the manager does not say: the block layout puts rank r on node r // ranks_per_node."""
    values, sources = ranks.values, ranks.sources
    by = f"launcher={launcher}"
    for name, key, expected in (
        ("world_size", "job.ranks", plan.job_ranks),
        ("local_world_size", "job.ranks_per_node", plan.job_ranks_per_node),
    ):
        if expected is None:
            continue
        found = values[name]
        if found is None:
            values[name], sources[name] = expected, key
        elif found != expected:
            where = "" if name == "world_size" else " on this node"
            raise LaunchError(f"{key}={expected} but {by} started {found} ranks{where} ({sources[name]})")
    world, local = values["world_size"], values["local_world_size"]
    if plan.job_nodes is not None and world is not None and local is not None and world != plan.job_nodes * local:
        raise LaunchError(
            f"job.nodes={plan.job_nodes} but {by} started {world} ranks with {local} on this node "
            f"({sources['world_size']}, {sources['local_world_size']})"
        )
    per_node = plan.job_ranks_per_node
    rank, local_rank = values["rank"], values["local_rank"]
    if per_node is None or rank is None or local_rank is None:
        return
    node, expected_local = divmod(rank, per_node)
    if local_rank != expected_local:
        raise LaunchError(
            f"rank {rank} is local rank {local_rank} ({sources['local_rank']}), but the block layout of "
            f"job.ranks_per_node={per_node} puts it at local rank {expected_local} of node {node}: the manager "
            "placed ranks another way (e.g. round robin); ask it for a block layout"
        )
    if values["node_rank"] is None:
        values["node_rank"], sources["node_rank"] = node, f"rank // job.ranks_per_node={per_node}"
    elif values["node_rank"] != node:
        raise LaunchError(
            f"node_rank {values['node_rank']} ({sources['node_rank']}) but the block layout of "
            f"job.ranks_per_node={per_node} puts rank {rank} on node {node}"
        )


# --- MASTER_ADDR / MASTER_PORT -------------------------------------------------------------------------------


def _first_host(source: HostSource, env: Env, read_file: ReadFile) -> Optional[str]:
    text = env.get(source.var)
    if not text:
        return None
    if source.file:
        try:
            text = read_file(text)
        except OSError as exc:
            raise LaunchError(f"{source.var}={env[source.var]}: cannot read the host file ({exc.strerror})") from None
    if source.format == "hostlist":
        return hostlist.first_host(text)
    if source.format == "lines":
        return hostlist.first_in_lines(text, source.skip)
    if source.format == "words":
        return hostlist.first_in_words(text, source.skip)
    raise LaunchError(f"hosts: unknown format {source.format!r} for {source.var} (hostlist, lines, words)")


def read_host_file(path: str) -> str:
    """A manager's host file (PBS's node file, LSF's rank file): undecodable bytes cannot hide the first host."""
    from ds_helper.rank.textfile import read_text  # only for a manager that names a host file

    return read_text(path, errors="replace")


def master_addr(
    spec: LauncherSpec, ranks: Ranks, master: MasterSpec, env: Env, read_file: ReadFile, job_hosts: Sequence[str] = ()
) -> Tuple[Optional[str], str]:
    if env.get("MASTER_ADDR"):
        return None, "kept from the environment"
    if master.addr:
        return master.addr, "master.addr"
    world, local = ranks["world_size"], ranks["local_world_size"]
    if world is not None and (world == 1 or local == world):
        return "127.0.0.1", "every rank is on this node"
    if job_hosts:
        return job_hosts[0], "first host of job.hosts"
    for source in spec.hosts:
        host = _first_host(source, env, read_file)
        if host:
            return host, f"first host of {source.var}"
    return None, "unknown"


def _job_number(name: str, job: str) -> int:
    """The number a job id stands for: ASCII digits as they are, any other text (PBS's 123.server, Flux's F58,
    Open MPI 5's namespace) hashed; digits of another script (Unicode's superscripts, Arabic-Indic) refused."""
    if job.isascii() and job.isdigit():
        return int(job[-18:])
    if job.isnumeric():
        raise LaunchError(f"{name}={job!r}: a job id of digits must be ASCII digits 0-9")
    return _checksum(job)


def master_port(
    spec: LauncherSpec, master: MasterSpec, env: Env, job_port: Optional[int] = None
) -> Tuple[Optional[int], str]:
    if env.get("MASTER_PORT"):
        text = env["MASTER_PORT"]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PORT):
            raise LaunchError(f"MASTER_PORT={text!r} in the environment: a port is a number from 1 to {MAX_PORT}")
        return None, "kept from the environment"
    if master.port is not None:
        return master.port, "master.port"
    if job_port is not None:
        return job_port, "chosen once for this job by ds-helper"
    for name in spec.job_id:
        job = env.get(name)
        if job:
            # Same job, same port on every rank; different jobs sharing a node rarely collide.
            return master.port_base + _job_number(name, job) % master.port_span, f"from {name}={job}"
    return master.default_port, "master.default_port"


def _checksum(text: str) -> int:
    import zlib  # only for a job id that is not a number

    return zlib.crc32(text.encode("utf-8", "surrogateescape"))  # a non-UTF-8 environment value too


def omp_share(plan: Plan, env: Env, local_world_size: Optional[int]) -> Optional[int]:
    """OMP_NUM_THREADS for a rank of a job ds-helper started without binding, when the user set none: its share
    of the CPUs this process may use, so that N ranks' thread pools do not each take every core (torchrun sets
    1). None where it does not apply: a standalone run or one under a manager, a binding (which sets its own),
    bind=none or bind.omp_threads=false (left alone), or a value of the user's (environment, env.*, ~env.*)."""
    if plan.job_port is None or bind.asks_for_binding(plan.bind) or not plan.bind.omp_threads:
        return None
    if "OMP_NUM_THREADS" in env or "OMP_NUM_THREADS" in plan.env:
        return None
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_world_size or 1))


# --- the whole rank ------------------------------------------------------------------------------------------


def resolve(
    plan: Plan,
    env: Env,
    extra_args: List[str],
    read_file: ReadFile = read_host_file,
    read_machine: bind.ReadMachine = bind.read_machine,
) -> Launch:
    """This rank's command and environment."""
    spec, why = choose_launcher(plan, env)
    ranks = resolve_ranks(spec, env)
    apply_job_layout(plan, spec.name, ranks)
    changes: List[Change] = []
    notes: List[str] = []
    binding = bind.for_rank(
        plan.bind,
        local_rank=ranks["local_rank"] or 0,
        local_world_size=ranks["local_world_size"],
        launcher=spec.name,
        env=env,
        dry_run=plan.dry_run,
        read_machine=read_machine,
    )
    notes.extend(binding.notes)

    for name in RANK_FIELDS:
        value = ranks[name]
        for exported in getattr(plan.export, name):
            if value is not None:
                changes.append(Change(exported, str(value), f"{name} <- {ranks.sources[name]}"))
            elif exported in env:  # an outer job's number, not this rank's: the script must not read it
                changes.append(Change(exported, None, f"{name} not given by launcher={spec.name}"))

    addr, addr_why = master_addr(spec, ranks, plan.master, env, read_file, plan.job_hosts)
    if addr is not None:
        changes.append(Change("MASTER_ADDR", addr, addr_why))
    elif addr_why == "unknown" and ranks["rank"] == 0:
        notes.append(
            "MASTER_ADDR not set: ranks span several nodes and launcher="
            f"{spec.name} gives no host list; set master.addr=HOST or export MASTER_ADDR"
        )
    port, port_why = master_port(spec, plan.master, env, plan.job_port)
    if port is not None:
        changes.append(Change("MASTER_PORT", str(port), port_why))

    for name, bound in binding.env.items():
        changes.append(Change(name, bound, f"bind.policy={plan.bind.policy}"))
    threads = omp_share(plan, env, ranks["local_world_size"])
    if threads is not None:
        changes.append(Change("OMP_NUM_THREADS", str(threads), "this rank's share of the node's CPUs (no binding)"))
    for name, setting in plan.env.items():
        changes.append(Change(name, setting, "env." + name + (" (unset)" if setting is None else "")))

    child = dict(env)
    for change in changes:
        if change.value is None:
            child.pop(change.name, None)
        else:
            child[change.name] = change.value
    argv = [*command_argv(plan.command), *plan.args, *extra_args]
    managed = "rank" not in ranks.fixed
    return Launch(spec.name, why, ranks, argv, child, changes, notes, binding.placement, binding.table, managed)
