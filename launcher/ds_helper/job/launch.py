"""The job side's entry: what a composed launch does with ``job.*``, and starting a whole job from one command.

``ds-helper launcher=NAME job.ranks=N train.py`` composes once, then either ``exec``s the manager's own start command
(``job/start.py``, from the launcher's YAML ``start`` block) or, for a launcher that starts ranks here (``local``),
starts the N ranks itself and supervises them (``job/local.py``). Either way every rank gets the composed plan in one
environment variable, ``DS_HELPER_PLAN``, and takes the rank side's standard-library path: Hydra is imported once
per job. The shape is validated once (``job/shape.py``); each rank checks that the manager placed it as asked
(``rank/resolve.py``, apply_job_layout).
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Mapping, NoReturn, Optional, Tuple

from ds_helper.compose.schema import JobSpec
from ds_helper.job.dryrun import job_size, node_binding, print_job, shown_command
from ds_helper.job.local import local_rank_env, restart_counts, signal_numbers, supervise
from ds_helper.job.shape import Shape, job_shape, local_shape, runs_here, shape_given
from ds_helper.job.start import (
    check_plan_size,
    free_port,
    job_starter,
    outer_rank_variables,
    plan_size,
    rank_command,
    rank_plan,
    start_command,
    with_layout,
)
from ds_helper.rank.bind import asks_for_binding
from ds_helper.rank.checks import check_log_names
from ds_helper.rank.describe import quote_command
from ds_helper.rank.errors import LaunchError, say
from ds_helper.rank.plan import PLAN_VAR, LauncherSpec, Plan, plan_to_json
from ds_helper.rank.resolve import omp_share


def start_if_job(plan: Plan, job: JobSpec, args: List[str], env: Mapping[str, str]) -> Plan:
    """Start the whole job when this process is its starter (never returns then); else the plan this rank runs,
    with the job's layout when ``job.*`` gives one, which the rank checks the manager kept."""
    starter = job_starter(plan, job, env)
    if starter is not None:
        start_job(plan, starter, job, args, env, asks_for_binding(plan.bind))
    return plan_for_ranks(plan, job)


def plan_for_ranks(plan: Plan, job: JobSpec) -> Plan:
    """The plan each rank a manager starts runs: under a manager, each rank checks it did what job.* says."""
    return with_layout(plan, job_shape(job)) if shape_given(job) else plan


def check_once(plan: Plan, shape: Shape) -> None:
    """What every rank would find wrong, found once here before any starts (the script and the plan's own checks
    were made with the plan: compose/planner.py)."""
    if plan.log.dir:
        check_log_names(plan.log, shape.ranks, 0)


def check_supervision(job: JobSpec, spec: LauncherSpec) -> None:
    """The supervisor's own keys (job/supervisor.py), checked before anything starts."""
    if isinstance(job.restarts, bool) or job.restarts < 0:
        raise LaunchError(f"job.restarts={job.restarts}: must be 0 or more (the times a failed job starts again)")
    if job.timeout is not None and not job.timeout > 0:
        raise LaunchError(f"job.timeout={job.timeout}: must be a number of seconds above 0 (or null: no limit)")
    signal_numbers(spec.start.signals)
    codes = spec.start.exit_codes
    reports: Dict[str, Tuple[str, Tuple[str, ...]]] = {
        "failure": (spec.start.failure, ()),
        "exit_codes.line": (codes.line, ()),
        "exit_codes.host": (codes.host, ("host", "codes")),
    }
    for key, (pattern, groups) in reports.items():
        _check_report(f"launcher={spec.name}: start.{key}", pattern, groups)


def _check_report(where: str, pattern: str, groups: Tuple[str, ...]) -> None:
    """A manager's report is read with a regular expression (job/reports.py), compiled here before anything starts."""
    if not pattern:
        return
    import re

    try:
        missing = set(groups) - set(re.compile(pattern).groupindex)
    except re.error as exc:
        raise LaunchError(f"{where}: not a regular expression ({exc})") from None
    if missing:
        raise LaunchError(f"{where}: needs the group{'s' if len(missing) > 1 else ''} {', '.join(sorted(missing))}")


def start_job(
    plan: Plan, spec: LauncherSpec, job: JobSpec, args: List[str], env: Mapping[str, str], binds: bool
) -> NoReturn:
    """Validate once, then exec the manager (or start the local ranks); dry run: show it and start nothing."""
    shape = job_shape(job)
    local = spec.start.local
    if local:
        shape = local_shape(spec.name, job, shape)
    check_once(plan, shape)
    check_supervision(job, spec)
    if binds and runs_here(local, shape):
        node_binding(plan, spec, shape)  # the ranks run on this machine: a binding that cannot work fails here, once
    port = plan.master.port if plan.master.port is not None else free_port()
    ranks = rank_plan(plan, spec, shape, port, args)
    text = plan_to_json(ranks)

    def manager_command(plan_text: str, attempt: int) -> List[str]:
        counts = restart_counts(attempt) if job.restarts else {}
        return start_command(spec, job, shape, binds, env, plan_text, label=plan.log.label, forward=counts)

    command = rank_command() if local else manager_command(text, 0)
    size = plan_size(spec, text)
    if plan.dry_run:
        print_job(ranks, spec, shape, command, local, text, size)
        raise SystemExit(0)
    check_plan_size(size)
    nested = local and any(name in env for name in spec.rank)  # started from a rank of another job
    outer = outer_rank_variables(plan, spec) if nested else []
    base = {k: v for k, v in env.items() if k != PLAN_VAR and k not in outer}
    threads = omp_note(ranks, env, shape if local else None)
    texts = {0: text}  # each attempt's plan, the same in its command line and its environment

    def text_of(attempt: int) -> str:
        """A restart gets a fresh port (the last one may linger in TIME_WAIT), unless master.port fixes one."""
        if attempt not in texts:
            fresh = plan.master.port is None
            texts[attempt] = plan_to_json(rank_plan(plan, spec, shape, free_port(), args)) if fresh else text
        return texts[attempt]

    if local:
        if threads and not plan.log.quiet:
            say(f"job of {job_size(shape)} on this machine{threads}")
        count = shape.ranks or 1

        def envs_for(attempt: int) -> List[Dict[str, str]]:
            here = {**base, PLAN_VAR: text_of(attempt)}
            return [{**here, **local_rank_env(spec, rank, count)} for rank in range(count)]

        names = [f"rank {rank}" for rank in range(count)]
        _exit(supervise(lambda _: [command] * count, envs_for, names, plan, spec, job))
    import shutil

    program = shutil.which(command[0], path=base.get("PATH"))
    if program is None:
        raise LaunchError(f"launcher={spec.name}: {command[0]!r} not found on PATH (job.program=NAME picks another)")
    if not plan.log.quiet:
        say(f"job of {job_size(shape)}{threads}: {shown_command(command, text)}")

    def commands_for(attempt: int) -> List[List[str]]:
        return [[program, *manager_command(text_of(attempt), attempt)[1:]]]

    def manager_env(attempt: int) -> List[Dict[str, str]]:
        return [{**base, PLAN_VAR: text_of(attempt)}]

    _exit(supervise(commands_for, manager_env, [os.path.basename(program)], plan, spec, job, shape.ranks_per_node))


def _exit(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing left to clean up; skips tearing down the composed interpreter (~0.2 s)


def omp_note(plan: Plan, env: Mapping[str, str], local: Optional[Shape]) -> str:
    """What the launch line says about OMP_NUM_THREADS, once per job (rank/resolve.py omp_share sets it per rank)."""
    share = omp_share(plan, env, local.ranks_per_node if local is not None else 1)
    if share is None:
        return ""
    if local is None:
        return " (OMP_NUM_THREADS: each rank's share of its node's CPUs, unless set)"
    cpus = len(os.sched_getaffinity(0))
    return f" (OMP_NUM_THREADS={share}: each rank's share of this machine's {cpus} CPUs, unless set)"


def saved_plan_hint(plan: Plan, job: JobSpec, path: str, env: Mapping[str, str]) -> str:
    """How to start what a saved plan describes. ``ds-helper --plan FILE`` starts one rank, so a job's plan needs
    a manager's command around it; checked like the job itself, before the plan is written."""
    rank = ["ds-helper", "--plan", path]
    spec = job_starter(plan, job, env)
    if spec is None or not shape_given(job) or spec.start.cannot:
        return f"start each rank with: {quote_command(rank)}"
    shape = job_shape(job)
    if not spec.start.local:
        command = start_command(spec, job, shape, asks_for_binding(plan.bind), env, "", rank_argv=rank)
        return f"start it with: {quote_command(command)}"
    count = local_shape(spec.name, job, shape).ranks
    if not plan.auto:
        return (
            f"a plan of launcher={spec.name} runs one rank; for the {count} ranks of this job, save it with "
            f"launcher=auto and start it under a manager (mpiexec -n {count} ds-helper --plan FILE)"
        )
    start = quote_command(["mpiexec", "-n", str(count), *rank])
    return f"ds-helper --plan starts one rank, so a manager starts this job's {count}; start it with: {start}"
