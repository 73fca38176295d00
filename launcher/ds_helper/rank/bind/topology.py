"""CPU / NUMA topology read from sysfs, plus the CPUs this process may use.

Standard library only, no subprocess: we read the same files ``numactl --hardware`` and ``lscpu`` read,
instead of parsing their output once per rank as DeepSpeed does.

``read_topology(root)`` takes a root directory so tests can point it at recorded trees under
``tests/data/topology/<machine>/``.
"""

from __future__ import annotations

import os

from ds_helper.rank.bind.cpuset import parse_cpus
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.records import Value

TYPE_CHECKING = False  # a binding rank reads the topology: typing, dataclasses, pathlib and re are not imported
if TYPE_CHECKING:
    from collections.abc import Mapping

_CPU_DIR = "sys/devices/system/cpu"
_NODE_DIR = "sys/devices/system/node"

# Linux's REMOTE_DISTANCE: SLIT distances below it mean "near" memory. On-package HBM in flat mode shows
# up at 12-13 from its own CPU node, a remote socket at 21+ (see tests/data/topology/README.md).
NEAR_DISTANCE = 20


class NumaNode(Value):
    """One NUMA node as sysfs describes it."""

    __slots__ = ("id", "cpus", "has_memory", "distance")

    def __init__(
        self, id: int, cpus: tuple[int, ...], has_memory: bool, distance: Mapping[int, int] | None = None
    ) -> None:
        self.id = id
        self.cpus = cpus
        """Online CPUs of the node; () for memory-only nodes (HBM flat mode, CXL expanders)."""
        self.has_memory = has_memory
        """Listed in node/has_memory."""
        self.distance: Mapping[int, int] = {} if distance is None else distance
        """Node id -> SLIT distance (10 = local)."""

    @property
    def memory_only(self) -> bool:
        return self.has_memory and not self.cpus


class Topology(Value):
    """What binding needs to know about the machine.

    All CPU ids are Linux logical CPU numbers (the ``N`` of ``cpuN``).
    """

    __slots__ = ("cpus", "nodes", "siblings", "package", "numa_from_sysfs")

    def __init__(
        self,
        cpus: tuple[int, ...],
        nodes: Mapping[int, NumaNode],
        siblings: Mapping[int, tuple[int, ...]],
        package: Mapping[int, int],
        numa_from_sysfs: bool = True,
    ) -> None:
        self.cpus = cpus
        """Online CPUs."""
        self.nodes = nodes
        """Node id -> node (every online node, memory-only ones included)."""
        self.siblings = siblings
        """CPU -> hardware threads of its core (itself included)."""
        self.package = package
        """CPU -> physical package (socket) id."""
        self.numa_from_sysfs = numa_from_sysfs
        """False when sysfs had no node directory (non-NUMA kernel): one made-up node 0."""

    @property
    def cpu_nodes(self) -> tuple[NumaNode, ...]:
        """Nodes that have CPUs, by id."""
        return tuple(n for _, n in sorted(self.nodes.items()) if n.cpus)

    @property
    def memory_only_nodes(self) -> tuple[NumaNode, ...]:
        """Nodes with memory and no CPUs (flat-mode HBM, CXL memory expanders), by id."""
        return tuple(n for _, n in sorted(self.nodes.items()) if n.memory_only)

    def node_of(self, cpu: int) -> int | None:
        for node in self.nodes.values():
            if cpu in node.cpus:
                return node.id
        return None

    def near_memory_node(self, node_id: int) -> int | None:
        """The closest memory-only node to a CPU node if it counts as near (HBM), else None.

        A memory-only node qualifies when its distance is below NEAR_DISTANCE and below the distance to every
        other CPU node: on-package HBM (13) does, a CXL expander or the other socket's HBM (23+) does not.
        Ties go to the lower node id. Without distance information nothing qualifies.
        """
        node = self.nodes.get(node_id)
        if node is None or not node.distance:
            return None
        other_cpu = [node.distance[n.id] for n in self.cpu_nodes if n.id != node_id and n.id in node.distance]
        limit = min([NEAR_DISTANCE, *other_cpu])
        best: tuple[int, int] | None = None
        for mem in self.memory_only_nodes:
            d = node.distance.get(mem.id)
            if d is not None and d < limit and (best is None or (d, mem.id) < best):
                best = (d, mem.id)
        return None if best is None else best[1]

    def core_key(self, cpu: int) -> tuple[int, ...]:
        """Identifies the physical core of ``cpu``: its sibling set."""
        return self.siblings.get(cpu, (cpu,))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _read_list(path: str) -> tuple[int, ...] | None:
    """A sysfs cpulist/nodelist file; '' (e.g. cpulist of a memory-only node) is the empty tuple."""
    text = _read(path)
    if text is None:
        return None
    if not text:
        return ()
    return parse_cpus(text, what=path)


def _read_int(path: str) -> int | None:
    text = _read(path)
    digits = None if text is None else text.removeprefix("-")
    if not digits or len(digits) > 9 or not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)  # type: ignore[arg-type]  # not None: digits came from it


def _numbered(directory: str, prefix: str) -> tuple[int, ...]:
    """Ids of ``<prefix>N`` entries of a directory (fallback when an ``online`` file is missing)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return ()
    numbers = [name[len(prefix) :] for name in names if name.startswith(prefix)]
    return tuple(sorted(int(n) for n in numbers if 0 < len(n) <= 5 and n.isascii() and n.isdigit()))


def read_topology(root: str | os.PathLike[str] = "/") -> Topology:
    """Read the topology under ``root`` (``/`` for the live machine, or a recorded tree).

    Missing pieces degrade gracefully: no ``system/node`` directory means one node 0 holding every CPU;
    a CPU without ``thread_siblings_list`` is its own core; without ``physical_package_id`` it is package 0.
    Only a missing CPU list is an error.
    """
    cpu_dir = os.path.join(root, _CPU_DIR)
    node_dir = os.path.join(root, _NODE_DIR)

    online = _read_list(os.path.join(cpu_dir, "online"))
    if online is None:
        online = _numbered(cpu_dir, "cpu")
    if not online:
        raise LaunchError(f"cannot read the CPU list from {cpu_dir}/online")
    online_set = set(online)

    siblings: dict[int, tuple[int, ...]] = {}
    package: dict[int, int] = {}
    for cpu in online:
        topo = os.path.join(cpu_dir, f"cpu{cpu}", "topology")
        sib = _read_list(os.path.join(topo, "thread_siblings_list"))
        # Offline siblings are dropped so that every recorded sibling is a CPU we could bind to.
        siblings[cpu] = tuple(c for c in sib if c in online_set) if sib else (cpu,)
        if cpu not in siblings[cpu]:
            siblings[cpu] = tuple(sorted((*siblings[cpu], cpu)))
        pkg = _read_int(os.path.join(topo, "physical_package_id"))
        package[cpu] = pkg if pkg is not None and pkg >= 0 else 0

    nodes: dict[int, NumaNode] = {}
    numa = os.path.isdir(node_dir)
    if numa:
        node_ids = _read_list(os.path.join(node_dir, "online"))
        if node_ids is None:
            node_ids = _numbered(node_dir, "node")
        has_memory = _read_list(os.path.join(node_dir, "has_memory"))
        for nid in node_ids:
            cpus = _read_list(os.path.join(node_dir, f"node{nid}", "cpulist")) or ()
            dist_text = _read(os.path.join(node_dir, f"node{nid}", "distance")) or ""
            values = dist_text.split()
            distance: dict[int, int] = {}
            # The distance file has one entry per *online* node, in node-id order (drivers/base/node.c).
            if len(values) == len(node_ids) and all(v.isascii() and v.isdigit() for v in values):
                distance = {other: int(v) for other, v in zip(node_ids, values, strict=True)}
            nodes[nid] = NumaNode(
                id=nid,
                cpus=tuple(c for c in cpus if c in online_set),
                has_memory=True if has_memory is None else nid in has_memory,
                distance=distance,
            )
    if not nodes:
        numa = False
        nodes[0] = NumaNode(id=0, cpus=online, has_memory=True, distance={0: 10})
    return Topology(
        cpus=online,
        nodes=nodes,
        siblings=siblings,
        package=package,
        numa_from_sysfs=numa,
    )


def usable_cpus() -> tuple[int, ...]:
    """CPUs this process may run on: its affinity mask.

    On Linux ``sched_getaffinity`` already reflects the cgroup cpuset (containers, Slurm) and any binding a
    process manager applied before us, so it is the one source of truth.
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:  # not Linux: assume every CPU
        return tuple(range(os.cpu_count() or 1))
    return tuple(sorted(getaffinity(0)))
