"""How a job starts: the plan every rank gets, whether this process starts a job at all, and the manager's start
command, filled in from the launcher's YAML ``start`` block (data, never a shell line)."""

from __future__ import annotations

import os
import socket
import sys
from typing import List, Mapping, Optional

from ds_helper.compose.schema import JobSpec
from ds_helper.job.shape import Shape, manager_keys, shape_given
from ds_helper.rank.checks import check_start
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.plan import PLAN_VAR, RANK_FIELDS, LauncherSpec, Plan
from ds_helper.rank.resolve import choose_launcher, signature_present


def _changed(plan: Plan, **values: object) -> Plan:
    """A copy of the plan with some fields changed, checked like any plan."""
    changed: Plan = Plan.from_data({**plan.to_data(), **values}, "plan")
    return changed


def with_layout(plan: Plan, shape: Shape) -> Plan:
    """The plan with the job's layout, as the ranks will check it (``resolve.apply_job_layout``)."""
    return _changed(
        plan,
        job_ranks=shape.ranks,
        job_nodes=shape.nodes,
        job_ranks_per_node=shape.ranks_per_node,
        job_hosts=list(shape.hosts),
    )


def rank_plan(plan: Plan, spec: LauncherSpec, shape: Shape, port: Optional[int], args: List[str]) -> Plan:
    """What each rank of a job started here runs: one manager, this job's layout and port, no dry run."""
    ranked = with_layout(plan, shape)
    return _changed(
        ranked,
        launchers=[spec],
        auto=False,
        fallback=None,
        evidence=[],
        args=[*plan.args, *args],
        dry_run=False,
        job_port=port,
    )


def free_port() -> int:
    """A TCP port free on this machine now. The kernel hands out a different one to each caller that asks at the
    same time, so two jobs started together from one machine do not share one (tests/test_job.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def rank_command() -> List[str]:
    """How a rank starts ds-helper: this interpreter and the same entry point (the console script if used)."""
    entry = os.path.abspath(sys.argv[0])
    if os.path.basename(entry) == "ds-helper" and os.path.isfile(entry):
        return [sys.executable, entry]
    return [sys.executable, "-m", "ds_helper.cli"]


def _has_rank_variables(spec: LauncherSpec, env: Mapping[str, str]) -> bool:
    """The manager started this process: its signature (or, without one, a rank variable) is present."""
    if spec.detect:
        return signature_present(spec, env)
    return any(source.split("[", 1)[0] in env for source in spec.rank)


def outer_rank_variables(plan: Plan, spec: LauncherSpec) -> List[str]:
    """What a rank of a local job has set for its script: found by a sub-job's starter, they are the outer job's."""
    fields = ("rank", "local_rank", "world_size", "local_world_size")
    read = [name for field in fields for name in getattr(spec, field)]
    exported = [name for field in RANK_FIELDS for name in getattr(plan.export, field)]
    return [*read, *exported, "MASTER_ADDR", "MASTER_PORT"]


def job_starter(plan: Plan, job: JobSpec, env: Mapping[str, str]) -> Optional[LauncherSpec]:
    """The manager whose start command this process should run, or None when this process is a rank."""
    wanted = shape_given(job) or bool(manager_keys(job))
    if plan.auto:
        if plan.fallback is None or not wanted:
            return None
        if any(signature_present(spec, env) for spec in plan.launchers):
            return None  # a recognised manager started this rank
        if set(plan.evidence) & set(env) <= set(outer_rank_variables(plan, plan.fallback)):
            return plan.fallback  # here, or in a rank of a job ds-helper started here: a job of its own
        choose_launcher(plan, env)  # an unknown manager's variables: its error names them
        return None
    spec = plan.launchers[0]
    if spec.start.local:  # only ds-helper itself starts a local job's ranks, with the plan in PLAN_VAR
        return spec if wanted else None
    if _has_rank_variables(spec, env):
        return None
    in_allocation = any(name in env for name in spec.start.allocation)
    return spec if shape_given(job) or (in_allocation and spec.start.program) else None


def _format_template(template: List[str], **values: object) -> List[str]:
    try:
        return [part.format(**values) for part in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise LaunchError(f"launcher start template {template}: bad placeholder {exc}") from None


def _host_args(spec: LauncherSpec, shape: Shape) -> List[str]:
    start = spec.start
    hosts = shape.hosts
    if not hosts and start.needs_hosts:  # one node (_shape_args refuses several nodes without hosts)
        hosts = ["localhost"]
    if not hosts:
        return []
    if not start.hosts:
        raise LaunchError(
            f"launcher={spec.name}: {start.program} takes the hosts of the allocation; job.hosts cannot be given"
        )
    per_node = shape.ranks_per_node or 1
    forms = [_format_template([start.host_form], host=h, ranks_per_node=per_node)[0] for h in hosts]
    if start.host_per_rank:
        forms = [form for form in forms for _ in range(per_node)]
    if start.host_join is None:
        return [arg for part in start.hosts for arg in (forms if part == "{hosts}" else [part])]
    return _format_template(start.hosts, hosts=start.host_join.join(forms))


def _shape_args(spec: LauncherSpec, shape: Shape, in_allocation: bool) -> List[str]:
    start = spec.start
    args: List[str] = []
    # Ask for each number the manager has an option for; a number it cannot take must follow from the others.
    if shape.ranks is not None:
        if not start.ranks:
            raise LaunchError(f"launcher={spec.name}: {start.program} has no option for a number of ranks")
        args += _format_template(start.ranks, ranks=shape.ranks)
    if shape.nodes is not None and start.nodes and not shape.hosts:
        args += _format_template(start.nodes, nodes=shape.nodes)
    elif (shape.nodes or 1) > 1 and not shape.hosts and not start.nodes and not in_allocation:
        raise LaunchError(
            f"launcher={spec.name}: a job on {shape.nodes} nodes needs job.hosts or job.hostfile "
            f"({start.program} cannot pick nodes by itself outside an allocation)"
        )
    if shape.ranks_per_node is not None and start.ranks_per_node:
        args += _format_template(start.ranks_per_node, ranks_per_node=shape.ranks_per_node)
    elif shape.ranks_per_node is not None and not start.host_per_rank and "{ranks_per_node}" not in start.host_form:
        if (shape.nodes or 1) > 1:
            raise LaunchError(f"launcher={spec.name}: {start.program} has no option for ranks per node")
    return args + _host_args(spec, shape)


def start_command(
    spec: LauncherSpec,
    job: JobSpec,
    shape: Shape,
    binds: bool,
    env: Mapping[str, str],
    plan_json: str,
    rank_argv: Optional[List[str]] = None,
    label: bool = False,
    forward: Optional[Mapping[str, str]] = None,
) -> List[str]:
    """The manager's command line that starts every rank as ``ds-helper`` with the plan in ``PLAN_VAR`` (and the
    ``forward`` variables), or, given ``rank_argv`` (``ds-helper --plan FILE``), as that command with nothing
    forwarded; each line labelled with its rank by the manager when ``label`` (``start.label``)."""
    start = spec.start
    if not start.program:
        raise LaunchError(f"launcher={spec.name} cannot start a job: {start.cannot or 'no start block'}")
    check_start(start, f"launcher={spec.name}")  # a site's file is checked when it is read (compose/config.py)
    program = job.program or start.program
    in_allocation = any(name in env for name in start.allocation)
    argv = [program, *start.args, *[str(a) for a in job.manager_args], *_shape_args(spec, shape, in_allocation)]
    if binds:
        argv += start.no_bind
    if label:
        if not start.label:
            raise LaunchError(f"launcher={spec.name}: {program} has no option to label lines (log.label=true)")
        argv += start.label
    if rank_argv is not None:
        return argv + rank_argv
    argv += start.exit_codes.args  # read by the supervisor: not for a command the user runs (a saved plan's)
    for name, value in (forward or {}).items():
        argv += _format_template(start.env, name=name, value=value)
    argv += forwarding(spec, plan_json)
    return argv + rank_command()


def forwarding(spec: LauncherSpec, plan_json: str) -> List[str]:
    """The manager's arguments that hand the plan to every rank (``start.env``)."""
    return _format_template(spec.start.env, name=PLAN_VAR, value=plan_json)


MAX_ARG_STRLEN = 128 * 1024
"""Linux's limit on one argument or one NAME=value of the environment, its terminating NUL included
(include/uapi/linux/binfmts.h): the plan travels in such strings."""


def plan_size(spec: LauncherSpec, plan_json: str) -> int:
    """Bytes of the longest string that holds the whole plan, its NUL included (what Linux counts): ``PLAN_VAR=...``
    in each rank's environment, and any of the manager's arguments that forward it (``-genv NAME VALUE``)."""
    strings = [f"{PLAN_VAR}={plan_json}"]
    if not spec.start.local:
        strings += [arg for arg in forwarding(spec, plan_json) if plan_json in arg]
    return max(len(string.encode("utf-8", "surrogateescape")) + 1 for string in strings)


def check_plan_size(size: int) -> None:
    """One line, before anything starts, where execve would fail on every rank with 'Argument list too long'."""
    if size > MAX_ARG_STRLEN:
        raise LaunchError(
            f"{PLAN_VAR} would be {size} bytes, over Linux's limit of {MAX_ARG_STRLEN} bytes for one variable or "
            "argument (MAX_ARG_STRLEN): pass long script arguments or many env.* values in a file the script "
            "reads, or save the plan with --save-plan FILE and start the ranks with ds-helper --plan FILE"
        )
