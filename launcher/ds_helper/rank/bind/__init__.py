"""Binding: where each local rank of a node runs (cores, NUMA memory, GPUs), the ``bind`` config group's code.

This module is binding's one face; the rest of ds-helper (``rank/resolve.py``, ``rank/become.py``, the job side)
calls only these, on the plan's own bind record (``rank/plan.py``, BindSpec):

- :func:`asks_for_binding`: whether the bind settings ask for anything at all;
- :func:`for_rank`: this rank's placement, the node's layout table and notes (from :func:`read_machine`);
- :func:`apply`: set the placement on this process, so the script inherits it through ``exec``.

Behind it: ``cpuset`` (core lists), ``topology`` (``/sys``), ``placement`` (the policies, pure) and ``memory``
(``set_mempolicy``). This module imports none of them at start-up: a rank that binds nothing loads none of
them, and a rank that binds loads them and nothing outside the standard library's light modules
(tests/test_plan.py holds both lines). The compose side settles the settings first (``compose/planner.py``).
"""

from __future__ import annotations

import os

from ds_helper.rank.errors import LaunchError, say

TYPE_CHECKING = False  # every rank imports this face: typing only for mypy
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Tuple

    from ds_helper.rank.bind.placement import Placement
    from ds_helper.rank.bind.topology import Topology
    from ds_helper.rank.plan import BindSpec

    Machine = Tuple[Topology, Tuple[int, ...]]
    """The node's CPU/NUMA topology and the CPUs this process may use."""
    ReadMachine = Callable[[], Machine]


class RankBinding:
    """What binding means for one rank: its placement, the node's layout (for the dry run) and notes."""

    __slots__ = ("placement", "table", "notes")

    def __init__(self, placement: Optional[Placement] = None, table: str = "", notes: Optional[List[str]] = None):
        self.placement = placement
        """CPU affinity, memory policy and variables for this rank (None: leave the process as it is)."""
        self.table = table
        """Where every local rank of this node goes, one line each (empty without binding)."""
        self.notes = [] if notes is None else notes

    @property
    def env(self) -> Dict[str, str]:
        """Variables binding sets for the script (OMP_NUM_THREADS, the GPU visibility variable)."""
        return {} if self.placement is None else self.placement.env


def asks_for_binding(spec: BindSpec) -> bool:
    """Whether these settings (as the compose side settled them) bind anything: cores, memory or GPUs."""
    return spec.policy != "none" or spec.gpus not in (None, False, "off")


def read_machine() -> Machine:
    """This node's topology from ``/sys`` and this process's affinity mask."""
    from ds_helper.rank.bind.topology import read_topology, usable_cpus

    return read_topology("/"), usable_cpus()


def _pinned_note(topology: Topology, usable: Tuple[int, ...]) -> Optional[str]:
    if set(usable) == set(topology.cpus):
        return None
    from ds_helper.rank.bind.cpuset import format_cpus

    return (
        f"this rank starts restricted to CPUs {format_cpus(usable)} of {format_cpus(topology.cpus)}: the process "
        "manager or a cgroup already bound it (Open MPI binds to a core when np <= 2; use mpirun --bind-to none "
        "or srun --cpu-bind=none to let ds-helper place ranks, or bind=none to keep the manager's binding)"
    )


def for_rank(
    spec: BindSpec,
    *,
    local_rank: int,
    local_world_size: Optional[int],
    launcher: str,
    env: Mapping[str, str],
    dry_run: bool,
    read_machine: ReadMachine = read_machine,
) -> RankBinding:
    """This rank's binding. Every rank computes the whole node's layout (cheap, deterministic) and keeps its
    own row, so all ranks agree without talking. A dry run also says when the rank starts already pinned.
    The machine is read only when binding is asked for or shown."""
    if not asks_for_binding(spec) and not dry_run:
        return RankBinding()
    topology, usable = read_machine()
    pinned = _pinned_note(topology, usable)
    notes = [pinned] if pinned and dry_run else []
    if not asks_for_binding(spec):
        return RankBinding(notes=notes)
    if local_world_size is None:
        raise LaunchError(
            f"binding needs the number of ranks on this node, and launcher={launcher} does not give it; use bind=none"
        )
    from ds_helper.rank.bind.placement import format_layout_table, layout

    try:
        placements = layout(spec, local_world_size=local_world_size, topology=topology, usable=usable, env=env)
    except LaunchError as exc:
        raise LaunchError(f"{exc}" + (f"; note: {pinned}" if pinned else "")) from None
    own = placements[local_rank]
    return RankBinding(own, format_layout_table(placements), [*notes, *own.notes])


def apply(placement: Optional[Placement], warn: bool) -> None:
    """CPU affinity and memory policy, set on this process so the script inherits them through exec."""
    if placement is None:
        return
    if placement.cpus is not None:
        try:
            os.sched_setaffinity(0, placement.cpus)
        except OSError as exc:
            raise LaunchError(f"cannot bind to CPUs {list(placement.cpus)}: {exc.strerror}") from None
    if placement.mem_policy is not None and placement.mem_nodes:
        from ds_helper.rank.bind.memory import set_mempolicy

        refused = set_mempolicy(placement.mem_policy, placement.mem_nodes)
        if refused and placement.strict:
            raise LaunchError(f"memory binding to NUMA node(s) {list(placement.mem_nodes)} refused: {refused}")
        if refused and warn:
            say(
                f"memory binding refused ({refused}); continuing with CPU binding only "
                "(bind.strict=true makes this an error)",
                "warning",
            )
