"""A job's shape: ranks, nodes, ranks per node and hosts, from ``job.*`` and a hostfile, checked once per job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from ds_helper.compose.schema import JobSpec
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.textfile import read_text

ReadFile = Callable[[str], str]


@dataclass
class Shape:
    """The job as asked: None where the user left a number to the manager (or the allocation)."""

    ranks: Optional[int] = None
    nodes: Optional[int] = None
    ranks_per_node: Optional[int] = None
    hosts: List[str] = field(default_factory=list)


def parse_hostfile(text: str, where: str) -> List[Tuple[str, Optional[int]]]:
    """``host [slots=N]`` a line, ``#`` comments, blank lines ignored (DeepSpeed's and Open MPI's format)."""
    entries: List[Tuple[str, Optional[int]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        host, slots = words[0], None
        for word in words[1:]:
            key, equals, value = word.partition("=")
            if key != "slots" or not equals or not value.isdigit() or int(value) < 1:
                raise LaunchError(f"{where}:{number}: {word!r}: expected slots=N (N >= 1) after the host name")
            slots = int(value)
        if any(host == seen for seen, _ in entries):
            raise LaunchError(f"{where}:{number}: host {host} is listed twice")
        entries.append((host, slots))
    if not entries:
        raise LaunchError(f"{where}: no hosts in the file")
    return entries


def read_hostfile(path: str) -> str:
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LaunchError(f"job.hostfile={path}: cannot read it ({reason})") from None


def shape_given(job: JobSpec) -> bool:
    """The user asked for a job shape (any job.* key of the shape)."""
    return any(v is not None for v in (job.ranks, job.nodes, job.ranks_per_node, job.hostfile)) or bool(job.hosts)


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
    hosts = [str(h) for h in job.hosts]
    if any(not h or h.startswith("-") or any(c.isspace() or c == "," for c in h) for h in hosts):
        raise LaunchError(f"job.hosts={hosts}: host names without spaces or commas, not starting with '-'")
    if len(set(hosts)) != len(hosts):
        raise LaunchError(f"job.hosts={hosts}: a host is listed twice")
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
