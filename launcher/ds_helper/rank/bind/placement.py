"""Binding policies as pure functions: (spec, local world size, topology, usable CPUs, env) -> Placements.

Standard library only and no side effects: nothing here touches affinity, memory policy or the environment.
``ds_helper.rank.bind.apply`` sets a Placement on the process right before exec, and the dry run prints
``format_layout_table``.

How this differs from DeepSpeed's ``get_numactl_cmd``, on purpose:

* the default core list is the process's *usable* CPUs (affinity mask, hence cgroup/PM binding), never
  ``range(physical_count)``; explicitly requested CPUs must be usable or we fail with the usable set;
* CPUs are dealt out per *physical core* (all usable hardware threads of a core go to the same rank), cores
  ordered by socket, node and id. DeepSpeed slices the sorted id list, so with Linux's Intel numbering
  (siblings n and n+56) ``0-3,8-11`` gave two ranks the two threads of the same cores;
* left-over cores are reported in the notes instead of silently unused;
* flat-mode HBM is detected per node by SLIT distance (``Topology.near_memory_node``), not by "as many
  CPU-less nodes as CPU nodes", so a CXL memory expander is never mistaken for HBM;
* ``KMP_AFFINITY`` is a note, not an error, unless its explicit proclist names CPUs outside the rank's set
  (see ``_kmp_affinity``).
"""

from __future__ import annotations

from _collections_abc import Sequence  # collections.abc's own, loaded with os (see cpuset.py)

from ds_helper.rank.bind.cpuset import format_cpus, parse_cpus
from ds_helper.rank.errors import LaunchError, did_you_mean
from ds_helper.rank.records import Value

TYPE_CHECKING = False  # a binding rank runs this: typing, dataclasses and re are not imported
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ds_helper.rank.bind.topology import Topology
    from ds_helper.rank.plan import BindSpec

POLICIES = ("none", "cores", "numa")
REMAINDERS = ("drop", "spread", "error")
MEMORY_MODES = ("auto", "none", "local", "preferred")

# The visibility variable ds-helper writes per vendor.
# AMD: ROCR_VISIBLE_DEVICES rather than HIP_VISIBLE_DEVICES because it filters at the ROCr runtime, below
# HIP, OpenCL and OpenMP offload alike, and it is what Slurm's gres/gpu sets for AMD GPUs; HIP then numbers
# the visible devices from 0, so nothing else needs to change.
GPU_VARS = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "amd": "ROCR_VISIBLE_DEVICES",
    "intel": "ZE_AFFINITY_MASK",
}

# Variables that, when already present, mean someone (the user, srun --gpus-per-task, Flux, MPICH
# -gpus-per-proc) has already chosen the devices. HIP also honours CUDA_VISIBLE_DEVICES.
GPU_CONFLICT_VARS = {
    "nvidia": ("CUDA_VISIBLE_DEVICES",),
    "amd": ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
    "intel": ("ZE_AFFINITY_MASK",),
}

_GPU_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_GPU_ID_LENGTH = 128


def _is_gpu_id(token: str) -> bool:
    """A device id as the visibility variables take it: an index, a UUID (``GPU-...``, ``MIG-...``) or a PCI bus id."""
    return 0 < len(token) <= _GPU_ID_LENGTH and _GPU_ID_CHARS.issuperset(token)


def _is_gpu_range(token: str) -> bool:
    """``A-B`` of ASCII digits: a range of device indexes."""
    first, dash, last = token.partition("-")
    return bool(dash) and all(n.isascii() and n.isdigit() for n in (first, last))


class Placement(Value):
    """What one local rank gets. Only the fields that should change something are set."""

    __slots__ = ("local_rank", "cpus", "mem_nodes", "mem_policy", "strict", "env", "notes")

    def __init__(self, local_rank: int, strict: bool = False, notes: list[str] | None = None) -> None:
        self.local_rank = local_rank
        self.cpus: tuple[int, ...] | None = None
        """Affinity to set; None: leave it alone."""
        self.mem_nodes: tuple[int, ...] = ()
        """NUMA nodes for mem_policy."""
        self.mem_policy: str | None = None
        """'bind' (MPOL_BIND), 'preferred' (MPOL_PREFERRED[_MANY]) or None."""
        self.strict = strict
        """A refused memory policy is an error, not a warning."""
        self.env: dict[str, str] = {}
        """Variables to set (OMP_NUM_THREADS, *_VISIBLE_DEVICES, ...)."""
        self.notes: list[str] = [] if notes is None else notes
        """Human lines for the dry run and warnings."""


# --------------------------------------------------------------------------------------------------- helpers


def _choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """Validate an enumerated setting (a str from the config or a plan)."""
    if isinstance(value, str) and value in allowed:
        return value
    hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
    raise LaunchError(f"{name}: invalid value {value!r}, expected one of {', '.join(allowed)}{hint}")


def _split(n: int, parts: int, rule: str) -> list[range]:
    """Split ``range(n)`` into ``parts`` contiguous pieces by the remainder rule (caller checks n >= parts).

    'drop': equal pieces of n // parts, the tail unused; 'spread': the first n % parts pieces one longer.
    ('error' is checked by the caller, which knows what to name in the message.)
    """
    per, rem = divmod(n, parts)
    if rule == "spread":
        return [range(i * per + min(i, rem), (i + 1) * per + min(i + 1, rem)) for i in range(parts)]
    return [range(i * per, (i + 1) * per) for i in range(parts)]


def _units(cpus: Sequence[int], topo: Topology, physical: bool) -> list[tuple[int, ...]]:
    """Group CPUs into physical cores: each unit is the given CPUs of one core (one CPU if ``physical``).

    Units are ordered by (package, node, lowest CPU id) so that contiguous slices stay inside a socket and a
    node even on machines that number CPUs round-robin across sockets.
    """
    chosen = set(cpus)
    groups: dict[tuple[int, ...], list[int]] = {}
    for cpu in sorted(chosen):
        groups.setdefault(topo.core_key(cpu), []).append(cpu)
    units = [tuple(g[:1]) if physical else tuple(g) for g in groups.values()]

    def order(unit: tuple[int, ...]) -> tuple[int, int, int]:
        node = topo.node_of(unit[0])
        return (topo.package.get(unit[0], 0), -1 if node is None else node, unit[0])

    return sorted(units, key=order)


def _deal(
    cpus: Sequence[int],
    ranks: int,
    topo: Topology,
    spec: BindSpec,
    rule: str,
    where: str,
) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """Deal CPUs to ``ranks`` ranks: whole cores when there are at least as many cores as ranks, otherwise
    single hardware threads. Returns (cpus per rank, unused cpus)."""
    units = _units(cpus, topo, spec.physical)
    if len(units) < ranks:
        # Fewer cores than ranks: fall back to hardware threads (only possible without `physical`).
        units = [(c,) for u in units for c in u]
    kind = "physical cores" if spec.physical else "CPUs"
    if len(units) < ranks:
        total = [c for u in units for c in u]
        raise LaunchError(
            f"{where}: {len(total)} {kind} ({format_cpus(total)}) for {ranks} local ranks, need at least one each"
        )
    if rule == "error" and len(units) % ranks:
        raise LaunchError(
            f"{where}: {len(units)} cores do not divide evenly among {ranks} local ranks "
            f"(bind.remainder=error; use 'drop' or 'spread')"
        )
    pieces = _split(len(units), ranks, rule)
    per_rank = [tuple(sorted(c for u in units[p.start : p.stop] for c in u)) for p in pieces]
    used = {c for r in per_rank for c in r}
    unused = tuple(sorted(set(cpus) - used))
    return per_rank, unused


def _base_cpus(spec: BindSpec, topo: Topology, usable: Sequence[int]) -> tuple[tuple[int, ...], list[str]]:
    """The CPUs to distribute: usable ∩ online, restricted to bind.cores when given (which must be usable)."""
    notes: list[str] = []
    online = set(topo.cpus)
    usable_set = {c for c in usable if c in online}
    if not usable_set:
        raise LaunchError(f"bind: none of the usable CPUs ({format_cpus(usable)}) is online")
    if len(usable_set) < len(online):
        notes.append(
            f"this process may use {len(usable_set)} of {len(online)} online CPUs ({format_cpus(usable_set)}); "
            "binding stays inside that set"
        )
    if spec.cores is None:
        return tuple(sorted(usable_set)), notes
    requested = parse_cpus(spec.cores, what="bind.cores")
    missing = [c for c in requested if c not in usable_set]
    if missing:
        raise LaunchError(
            f"bind.cores: CPUs {format_cpus(missing)} are not usable by this process "
            f"(usable: {format_cpus(usable_set)})"
        )
    return requested, notes


def _memory(
    mode: str, policy: str, cpus: Sequence[int], topo: Topology
) -> tuple[str | None, tuple[int, ...], list[str]]:
    """Memory policy for one rank's CPUs: (mem_policy, mem_nodes, notes)."""
    if mode == "none":
        return None, (), []
    nodes = sorted({n for c in cpus if (n := topo.node_of(c)) is not None})
    with_memory = [n for n in nodes if topo.nodes[n].has_memory]
    memory_nodes = [n for n in topo.nodes.values() if n.has_memory]
    notes: list[str] = []
    if mode == "auto":
        if not topo.numa_from_sysfs or len(memory_nodes) <= 1:
            return (
                None,
                (),
                [],
            )  # one memory node: nothing to choose, and binding could only fail
        if policy == "cores" and len(nodes) > 1:
            return (
                None,
                (),
                [f"cores span NUMA nodes {format_cpus(nodes)}: memory left to the kernel (first touch)"],
            )
        hbm = [topo.near_memory_node(n) for n in nodes]
        if nodes and all(h is not None for h in hbm):
            return "preferred", tuple(sorted({h for h in hbm if h is not None})), []
        if not with_memory:
            return (
                None,
                (),
                [f"NUMA node(s) {format_cpus(nodes)} have no memory: memory left to the kernel"],
            )
        return "bind", tuple(with_memory), []
    if mode == "local":
        if not with_memory:
            return (
                None,
                (),
                [f"NUMA node(s) {format_cpus(nodes)} have no memory: memory left to the kernel"],
            )
        return "bind", tuple(with_memory), notes
    # preferred: the near HBM node when there is one, else the node itself (if it has memory)
    targets = sorted({h if (h := topo.near_memory_node(n)) is not None else n for n in nodes})
    targets = [t for t in targets if topo.nodes[t].has_memory]
    if not targets:
        return (
            None,
            (),
            [f"NUMA node(s) {format_cpus(nodes)} have no memory: memory left to the kernel"],
        )
    return "preferred", tuple(targets), notes


def _gpu_ids(value: object) -> list[str]:
    """Normalise bind.gpus into a list of device ids (str), [] for off."""
    if value is None or value is False:
        return []
    if isinstance(value, bool):
        raise LaunchError("bind.gpus: true is not a GPU count; give a count (4) or a list ([0,1,2,3])")
    if isinstance(value, int):
        if value < 0 or value > 4096:
            raise LaunchError(f"bind.gpus: {value} is not a valid GPU count")
        return [str(i) for i in range(value)]
    items: list[object]
    if isinstance(value, str):
        if value.strip().lower() in ("off", "none", ""):
            return []
        items = list(value.split(","))
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = list(value)
    else:
        raise LaunchError(
            f"bind.gpus: expected a count, a list of device ids or null, got {type(value).__name__} {value!r:.40}"
        )
    ids: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise LaunchError(f"bind.gpus: device ids must be ints or strings, got {type(item).__name__} {item!r:.40}")
        if isinstance(item, int):
            if item < 0:
                raise LaunchError(f"bind.gpus: negative device id {item}")
            ids.append(str(item))
            continue
        for token in item.split(","):
            token = token.strip()
            if _is_gpu_range(token):
                ids.extend(str(i) for i in parse_cpus(token, what="bind.gpus"))
            elif _is_gpu_id(token):
                ids.append(token)
            else:
                raise LaunchError(f"bind.gpus: {token!r:.40} is not a device id")
    seen: set[str] = set()
    for gid in ids:
        if gid in seen:
            raise LaunchError(f"bind.gpus: device {gid} listed twice")
        seen.add(gid)
    return ids


def _proclist(kmp_affinity: str) -> str | None:
    """What ``proclist=[...]`` of a KMP_AFFINITY value lists, or None without one."""
    _, found, rest = kmp_affinity.partition("proclist=[")
    listed, closed, _ = rest.partition("]")
    return listed if found and closed else None


def _kmp_affinity(env: Mapping[str, str], cpus: tuple[int, ...], local_rank: int) -> list[str]:
    """KMP_AFFINITY vs an explicit binding.

    DeepSpeed refuses any KMP_AFFINITY. We only refuse an explicit proclist naming CPUs outside the rank's
    set (those threads would fail to pin or pin where we did not bind). Other values (e.g. Intel's own
    ``granularity=fine,compact,1,0``, set together with numactl by IPEX/accelerate) place threads *inside* the
    inherited mask, so they get a warning note: they can still pin the main thread to one core (pytorch#91989).
    """
    value = env.get("KMP_AFFINITY")
    if value is None or value.strip() in ("", "disabled", "none"):
        return []
    proclist = _proclist(value)
    if proclist is not None:
        try:
            listed = parse_cpus(proclist.replace("{", "").replace("}", ""), what="KMP_AFFINITY")
        except LaunchError:
            listed = ()
        outside = [c for c in listed if c not in cpus]
        if outside:
            raise LaunchError(
                f"KMP_AFFINITY={value!r:.80} pins OpenMP threads to CPUs {format_cpus(outside)} outside local rank "
                f"{local_rank}'s cores {format_cpus(cpus)}; unset KMP_AFFINITY or set bind.policy=none"
            )
    note = (
        f"KMP_AFFINITY={value} kept: Intel OpenMP pins threads inside the rank's cores; unset it if threads end "
        "up on one core"
    )
    return [note]


# ------------------------------------------------------------------------------------------------ the plan


def _plan_cpus(
    spec: BindSpec,
    policy: str,
    rule: str,
    lws: int,
    topo: Topology,
    usable: Sequence[int],
) -> tuple[list[tuple[int, ...]] | None, list[str]]:
    """CPUs for every local rank (None for policy 'none') and notes shared by all ranks."""
    if policy == "none":
        return None, (["bind.cores ignored: bind.policy is none"] if spec.cores is not None else [])
    base, notes = _base_cpus(spec, topo, usable)
    if policy == "cores":
        slices, spare = _deal(base, lws, topo, spec, rule, "bind.cores")
        if spare:
            notes.append(f"CPUs {format_cpus(spare)} unused (bind.remainder={rule}, bind.physical={spec.physical})")
        return slices, notes

    # policy == "numa": the nodes with wanted CPUs, ordered by socket then id.
    by_node: dict[int, list[int]] = {}
    for cpu in base:
        node = topo.node_of(cpu)
        if node is not None:
            by_node.setdefault(node, []).append(cpu)
    order = sorted(by_node, key=lambda n: (topo.package.get(by_node[n][0], 0), n))
    count = len(order)
    if count == 0:
        raise LaunchError("bind.policy=numa: none of the CPUs to bind belongs to a NUMA node")
    per_rank: list[tuple[int, ...]] = []
    if lws <= count:
        # Fewer ranks than nodes: each rank gets whole node(s).
        if rule == "error" and count % lws:
            raise LaunchError(
                f"bind.policy=numa: {count} NUMA nodes do not divide evenly among {lws} local ranks "
                "(bind.remainder=error; use 'drop' or 'spread')"
            )
        pieces = _split(count, lws, rule)
        for piece in pieces:
            cpus = [c for n in order[piece.start : piece.stop] for c in by_node[n]]
            per_rank.append(tuple(sorted(c for u in _units(cpus, topo, spec.physical) for c in u)))
        used_nodes = {n for p in pieces for n in order[p.start : p.stop]}
        if len(used_nodes) < count:
            spare_nodes = [n for n in order if n not in used_nodes]
            notes.append(f"NUMA node(s) {format_cpus(spare_nodes)} unused (bind.remainder={rule})")
        all_unused = sorted(set(base) - {c for r in per_rank for c in r})
        if all_unused and spec.physical:
            notes.append(f"CPUs {format_cpus(all_unused)} unused (bind.physical=True)")
        return per_rank, notes

    # More ranks than nodes: ranks per node as even as possible, contiguous ranks on the same node.
    if lws % count:
        if rule == "error":
            raise LaunchError(
                f"bind.policy=numa: {lws} local ranks do not divide evenly among {count} NUMA nodes "
                "(bind.remainder=error)"
            )
        notes.append(f"{lws} local ranks on {count} NUMA nodes: the first {lws % count} node(s) get one rank more")
    unused: list[int] = []
    for node, ranks in zip(order, _split(lws, count, "spread"), strict=True):
        slices, spare = _deal(
            by_node[node],
            len(ranks),
            topo,
            spec,
            rule,
            f"bind.policy=numa: node {node}",
        )
        per_rank.extend(slices)
        unused.extend(spare)
    if unused:
        notes.append(f"CPUs {format_cpus(unused)} unused (bind.remainder={rule}, bind.physical={spec.physical})")
    return per_rank, notes


def layout(
    spec: BindSpec,
    *,
    local_world_size: int,
    topology: Topology,
    usable: Sequence[int],
    env: Mapping[str, str],
) -> list[Placement]:
    """Placements of every local rank of this node, in local rank order."""
    if isinstance(local_world_size, bool) or not isinstance(local_world_size, int) or local_world_size < 1:
        raise LaunchError(f"local world size must be a positive integer, got {local_world_size!r}")
    policy = _choice(spec.policy, "bind.policy", POLICIES)
    rule = _choice(spec.remainder, "bind.remainder", REMAINDERS)
    mode = _choice(spec.memory, "bind.memory", MEMORY_MODES)
    vendor = _choice(spec.gpu_vendor, "bind.gpu_vendor", tuple(GPU_VARS))

    per_rank, shared = _plan_cpus(spec, policy, rule, local_world_size, topology, usable)

    gpu_ids = _gpu_ids(spec.gpus)
    gpu_slices: list[list[str]] = []
    gpu_notes: list[str] = []
    if gpu_ids:
        for var in GPU_CONFLICT_VARS[vendor]:
            if var in env:
                raise LaunchError(
                    f"bind.gpus is set but {var}={env[var]!r} is already in the environment (set by you or the "
                    "process manager); ds-helper never overrides it: unset it or set bind.gpus=null"
                )
        per, rem = divmod(len(gpu_ids), local_world_size)
        if per == 0:
            raise LaunchError(
                f"bind.gpus: {len(gpu_ids)} GPU(s) ({','.join(gpu_ids)}) for {local_world_size} local ranks, "
                "need at least one each"
            )
        gpu_slices = [gpu_ids[r * per : (r + 1) * per] for r in range(local_world_size)]
        if rem:
            gpu_notes.append(f"GPU(s) {','.join(gpu_ids[-rem:])} unused ({len(gpu_ids)} for {local_world_size} ranks)")
        gpu_notes.append(
            f"each rank sees its GPU(s) renumbered from 0 ({GPU_VARS[vendor]}): use device 0, not LOCAL_RANK"
        )

    placements: list[Placement] = []
    for rank in range(local_world_size):
        p = Placement(local_rank=rank, strict=spec.strict, notes=list(shared))
        if per_rank is not None:
            cpus = per_rank[rank]
            p.cpus = cpus
            p.mem_policy, p.mem_nodes, mem_notes = _memory(mode, policy, cpus, topology)
            p.notes.extend(f"local rank {rank}: {n}" for n in mem_notes)
            if spec.omp_threads:
                if "OMP_NUM_THREADS" in env:
                    p.notes.append(f"OMP_NUM_THREADS kept at {env['OMP_NUM_THREADS']} (set by user)")
                else:
                    p.env["OMP_NUM_THREADS"] = str(len(cpus))
            p.notes.extend(_kmp_affinity(env, cpus, rank))
        if gpu_slices:
            p.env[GPU_VARS[vendor]] = ",".join(gpu_slices[rank])
            p.notes.extend(gpu_notes)
        placements.append(p)
    return placements


# ------------------------------------------------------------------------------------------------ output


def format_layout_table(placements: Sequence[Placement]) -> str:
    """A fixed-width table (local rank, cores, memory, GPU, threads) followed by the distinct notes."""
    header = ("local rank", "cores", "memory", "GPU", "threads")
    rows: list[tuple[str, ...]] = []
    for p in placements:
        cores = "-" if p.cpus is None else f"{format_cpus(p.cpus)} ({len(p.cpus)})"
        memory = "-" if p.mem_policy is None else f"{p.mem_policy} {format_cpus(p.mem_nodes)}"
        gpu = next((p.env[v] for v in GPU_VARS.values() if v in p.env), "-")
        threads = p.env.get("OMP_NUM_THREADS", "-")
        rows.append((str(p.local_rank), cores, memory, gpu, threads))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    seen: dict[str, None] = {}
    for p in placements:
        for note in p.notes:
            seen.setdefault(note, None)
    lines.extend(f"note: {n}" for n in seen)
    return "\n".join(lines)
