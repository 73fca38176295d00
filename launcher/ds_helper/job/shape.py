"""A job's shape: ranks, nodes, ranks per node and hosts, from ``job.*`` and a hostfile, checked once per job."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional

from ds_helper.compose.schema import JobSpec
from ds_helper.job.hostfile import check_hosts, parse_hostfile, read_hostfile
from ds_helper.rank.errors import LaunchError

ReadFile = Callable[[str], str]


@dataclass
class Shape:
    """The job as asked: None where the user left a number to the manager (or the allocation)."""

    ranks: Optional[int] = None
    nodes: Optional[int] = None
    ranks_per_node: Optional[int] = None
    hosts: List[str] = field(default_factory=list)


def shape_given(job: JobSpec) -> bool:
    """The user asked for a job shape (any job.* key of the shape)."""
    return any(v is not None for v in (job.ranks, job.nodes, job.ranks_per_node, job.hostfile)) or bool(job.hosts)


def manager_keys(job: JobSpec) -> List[str]:
    """The job.* keys given that only a process manager can act on (ds-helper's own ranks run here only)."""
    return [f"job.{name}" for name in ("hosts", "hostfile", "program", "manager_args") if getattr(job, name)]


MAX_LOCAL_RANKS = 1024
"""Ranks ds-helper starts on one machine: each is a process with an interpreter of its own, and 1024 is far
above the CPUs or GPUs of one machine (a hostfile line ``localhost slots=100000`` must not fork 100,000)."""


def local_shape(name: str, job: JobSpec, shape: Shape) -> Shape:
    """The shape of a job ds-helper starts itself (launcher ``name``), or one error: keys that need a manager, no
    number of ranks, or more ranks than one machine should start."""
    keys = manager_keys(job)
    if (shape.nodes or 1) > 1 or shape.ranks_per_node not in (None, shape.ranks):
        keys.append(f"job.nodes={shape.nodes}" if job.nodes else "more than one node")
    if keys:
        raise LaunchError(
            f"{', '.join(keys)} {'needs' if len(keys) == 1 else 'need'} a process manager to start the job: "
            f"launcher={name} starts ranks on this machine only; pick one with launcher=NAME (mpich, openmpi, "
            "slurm, ...)"
        )
    if shape.ranks is None:
        raise LaunchError(f"launcher={name}: give job.ranks=N to start N ranks on this machine")
    if shape.ranks > MAX_LOCAL_RANKS:
        raise LaunchError(
            f"job.ranks={shape.ranks}: ds-helper starts at most {MAX_LOCAL_RANKS} ranks on this machine (each one "
            "a process with its own interpreter); a larger job needs a manager across nodes (launcher=NAME)"
        )
    return replace(shape, nodes=1, ranks_per_node=shape.ranks)


def runs_here(local: bool, shape: Shape) -> bool:
    """Whether the ranks run on this machine, so that its CPUs and GPUs are theirs: a local job, or a manager's job
    on one node without hosts."""
    return local or (shape.nodes == 1 and not shape.hosts)


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise LaunchError(f"job.{name}={value}: must be a positive number")


def _divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise LaunchError(f"{what}: {total} ranks do not divide evenly ({total} / {parts} is not a whole number)")
    return total // parts


def job_shape(job: JobSpec, read_file: ReadFile = read_hostfile) -> Shape:
    """The consistent shape of ``job.*``, every number derivable from the others filled in, or one error."""
    for name in ("ranks", "nodes", "ranks_per_node"):
        _positive(name, getattr(job, name))
    if job.hosts and job.hostfile:
        raise LaunchError("give job.hosts or job.hostfile, not both")
    hosts = check_hosts([str(h) for h in job.hosts], "job.hosts")
    slots: Optional[int] = None
    if job.hostfile:
        entries = parse_hostfile(read_file(job.hostfile), f"job.hostfile={job.hostfile}")
        hosts = [host for host, _ in entries]
        counts = sorted({n for _, n in entries if n is not None})
        if len(counts) > 1 and job.ranks_per_node is None:
            listed = ", ".join(f"{h} slots={n}" for h, n in entries if n is not None)
            raise LaunchError(f"job.hostfile={job.hostfile}: slots differ ({listed}); set job.ranks_per_node")
        slots = counts[0] if len(counts) == 1 else None
    ranks, nodes = job.ranks, job.nodes
    per_node = job.ranks_per_node if job.ranks_per_node is not None else slots
    if nodes is None and ranks is not None and per_node is not None:
        nodes = _divide(ranks, per_node, f"job.ranks={ranks} with {per_node} ranks per node")
    if nodes is None and hosts:
        nodes = len(hosts)
    if per_node is None and ranks is not None and nodes is not None:
        per_node = _divide(ranks, nodes, f"job.ranks={ranks} over job.nodes={nodes}")
    if ranks is None and nodes is not None and per_node is not None:
        ranks = nodes * per_node
    if None not in (ranks, nodes, per_node) and ranks != nodes * per_node:  # type: ignore[operator]
        raise LaunchError(f"job.ranks={ranks} is not job.nodes={nodes} x {per_node} ranks per node")
    if hosts and nodes is not None:
        if nodes > len(hosts):
            raise LaunchError(f"job.nodes={nodes} but only {len(hosts)} host(s): {', '.join(hosts)}")
        hosts = hosts[:nodes]
    return Shape(ranks, nodes, per_node, hosts)
