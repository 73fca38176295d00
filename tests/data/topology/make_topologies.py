"""Generate the recorded sysfs trees used by the binding tests (see README.md in this folder).

Run from anywhere: ``python tests/data/topology/make_topologies.py``. It rewrites the synthetic machines
(``xeon-2s-ht``, ``xeon-2s-ht-snc2``, ``xeon-max-9480-flat``, ``epyc-nps4``); ``this-vm`` is a verbatim copy of
a real machine and is only refreshed with ``--this-vm`` (on the machine you want to record).
Only the files ``launcher/ds_helper/bind/topology.py`` reads are written.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ds_helper.bind.cpuset import format_cpus as fmt  # the kernel's cpulist format (0-3,8-11)

HERE = Path(__file__).resolve().parent


@dataclass
class Machine:
    name: str
    sockets: int
    cores_per_socket: int  # physical cores per socket
    threads: int  # hardware threads per core (1 or 2)
    nodes_per_socket: int  # CPU NUMA nodes per socket (SNC / NPS)
    hbm_nodes: int  # memory-only nodes, numbered after the CPU nodes
    distance: list[list[int]]  # full SLIT matrix over all nodes
    core_ids: list[int]  # value of core_id for the i-th core of a socket (Intel has gaps)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def generate(m: Machine) -> None:
    root = HERE / m.name
    if root.exists():
        shutil.rmtree(root)
    cpu_dir = root / "sys/devices/system/cpu"
    node_dir = root / "sys/devices/system/node"
    ncores = m.sockets * m.cores_per_socket
    ncpus = ncores * m.threads
    # Linux numbering on these machines: first thread of every core first (socket 0 then socket 1), then the
    # second threads in the same order: core c has threads c and c + ncores.
    write(cpu_dir / "online", fmt(list(range(ncpus))))
    write(cpu_dir / "possible", fmt(list(range(ncpus))))
    write(cpu_dir / "present", fmt(list(range(ncpus))))
    for core in range(ncores):
        socket, idx = divmod(core, m.cores_per_socket)
        threads = [core + t * ncores for t in range(m.threads)]
        for cpu in threads:
            topo = cpu_dir / f"cpu{cpu}" / "topology"
            write(topo / "thread_siblings_list", fmt(threads))
            write(topo / "physical_package_id", str(socket))
            write(topo / "core_id", str(m.core_ids[idx]))
    cpu_nodes = m.sockets * m.nodes_per_socket
    per_node = m.cores_per_socket // m.nodes_per_socket
    all_nodes = list(range(cpu_nodes + m.hbm_nodes))
    assert len(m.distance) == len(all_nodes) and all(len(r) == len(all_nodes) for r in m.distance)
    write(node_dir / "online", fmt(all_nodes))
    write(node_dir / "possible", fmt(all_nodes))
    write(node_dir / "has_cpu", fmt(list(range(cpu_nodes))))
    write(node_dir / "has_memory", fmt(all_nodes))
    write(node_dir / "has_normal_memory", fmt(all_nodes))
    for node in all_nodes:
        if node < cpu_nodes:
            first = node * per_node
            cores = range(first, first + per_node)
            cpus = [c + t * ncores for c in cores for t in range(m.threads)]
        else:
            cpus = []
        write(node_dir / f"node{node}" / "cpulist", fmt(cpus))
        write(
            node_dir / f"node{node}" / "distance",
            " ".join(str(d) for d in m.distance[node]),
        )


# Cascade Lake / Ice Lake style core_id values: 28 ids with gaps (our code must not rely on core_id).
XEON28_CORE_IDS = [i for i in range(32) if i not in (7, 15, 23, 31)]

MACHINES = [
    # 2x Xeon Platinum 8280 (28 cores, HT): nodes 0-27,56-83 and 28-55,84-111; SLIT 10/21.
    Machine("xeon-2s-ht", 2, 28, 2, 1, 0, [[10, 21], [21, 10]], XEON28_CORE_IDS),
    # Same box with Sub-NUMA Clustering (SNC2): 2 nodes per socket, 11 to the sibling cluster, 21 across.
    Machine(
        "xeon-2s-ht-snc2",
        2,
        28,
        2,
        2,
        0,
        [[10, 11, 21, 21], [11, 10, 21, 21], [21, 21, 10, 11], [21, 21, 11, 10]],
        XEON28_CORE_IDS,
    ),
    # 2x Xeon CPU Max 9480 (56 cores, HT, 64 GB HBM2e each) in flat mode, quadrant (no SNC):
    # DDR nodes 0-1 with CPUs 0-55,112-167 / 56-111,168-223, HBM nodes 2-3 without CPUs.
    # SLIT: own HBM 13, other socket's DDR 21, other socket's HBM 23.
    Machine(
        "xeon-max-9480-flat",
        2,
        56,
        2,
        1,
        2,
        [[10, 21, 13, 23], [21, 10, 23, 13], [13, 23, 10, 23], [23, 13, 23, 10]],
        list(range(56)),
    ),
    # 1x AMD EPYC 7763 (64 cores, SMT2) in NPS4: nodes of 16 cores, 0-15,64-79 / 16-31,80-95 / ...
    # SLIT: 11 to the node in the same quadrant pair, 12 to the other two.
    Machine(
        "epyc-nps4",
        1,
        64,
        2,
        4,
        0,
        [[10, 11, 12, 12], [11, 10, 12, 12], [12, 12, 10, 11], [12, 12, 11, 10]],
        list(range(64)),
    ),
]


def record_this_machine(dest: Path) -> None:
    """Copy the live files topology.py reads (regular text files only) into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    src_cpu = Path("/sys/devices/system/cpu")
    src_node = Path("/sys/devices/system/node")
    files = [src_cpu / "online", src_cpu / "possible", src_cpu / "present"]
    for cpu_path in sorted(src_cpu.glob("cpu[0-9]*")):
        for name in ("thread_siblings_list", "physical_package_id", "core_id"):
            files.append(cpu_path / "topology" / name)
    if src_node.is_dir():
        for name in (
            "online",
            "possible",
            "has_cpu",
            "has_memory",
            "has_normal_memory",
        ):
            files.append(src_node / name)
        for node_path in sorted(src_node.glob("node[0-9]*")):
            files += [node_path / "cpulist", node_path / "distance"]
    for f in files:
        if f.is_file():
            target = dest / str(f).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.read_text())


def main() -> None:
    for m in MACHINES:
        generate(m)
    if "--this-vm" in sys.argv[1:]:
        record_this_machine(HERE / "this-vm")


if __name__ == "__main__":
    main()
