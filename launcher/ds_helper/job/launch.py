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
from dataclasses import replace
from typing import List, Mapping, NoReturn

from ds_helper.compose.schema import JobSpec
from ds_helper.job.dryrun import job_size, node_binding, print_job, shown_command
from ds_helper.job.local import local_rank_env, supervise_local_ranks
from ds_helper.job.shape import job_shape, shape_given
from ds_helper.job.start import free_port, job_starter, rank_command, rank_plan, start_command, with_layout
from ds_helper.rank.bind import asks_for_binding
from ds_helper.rank.errors import LaunchError, say
from ds_helper.rank.plan import PLAN_VAR, LauncherSpec, Plan, plan_to_json


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


def start_job(
    plan: Plan, spec: LauncherSpec, job: JobSpec, args: List[str], env: Mapping[str, str], binds: bool
) -> NoReturn:
    """Validate once, then exec the manager (or start the local ranks); dry run: show it and start nothing."""
    shape = job_shape(job)
    local = spec.start.local
    if local:
        if (shape.nodes or 1) > 1 or (shape.ranks_per_node not in (None, shape.ranks)):
            raise LaunchError(
                f"launcher={spec.name} starts ranks on this machine only; a job on several nodes needs a manager "
                "(launcher=mpich, openmpi, slurm, ...)"
            )
        if shape.ranks is None:
            raise LaunchError(f"launcher={spec.name}: give job.ranks=N to start N ranks on this machine")
        shape = replace(shape, nodes=1, ranks_per_node=shape.ranks)
    if binds and (local or (shape.nodes == 1 and not shape.hosts)):
        node_binding(plan, spec, shape)  # the ranks run on this machine: a binding that cannot work fails here, once
    port = plan.master.port if plan.master.port is not None else free_port()
    ranks = rank_plan(plan, spec, shape, port, args)
    text = plan_to_json(ranks)
    command = rank_command() if local else start_command(spec, job, shape, binds, env, text)
    if plan.dry_run:
        print_job(ranks, spec, shape, command, local, text)
        raise SystemExit(0)
    base = {k: v for k, v in env.items() if k != PLAN_VAR}
    base[PLAN_VAR] = text
    if local:
        size = shape.ranks or 1
        envs = [{**base, **local_rank_env(spec, rank, size)} for rank in range(size)]
        sys.stdout.flush()
        code = supervise_local_ranks(command, envs, plan.log.grace)
        sys.stderr.flush()
        os._exit(code)  # nothing left to clean up; skips tearing down the composed interpreter (~0.2 s)
    import shutil

    program = shutil.which(command[0], path=base.get("PATH"))
    if program is None:
        raise LaunchError(f"launcher={spec.name}: {command[0]!r} not found on PATH (job.program=NAME picks another)")
    if not plan.log.quiet:
        say(f"job of {job_size(shape)}: {shown_command(command, text)}")
    sys.stderr.flush()
    try:
        os.execve(program, command, base)
    except OSError as exc:
        raise LaunchError(f"cannot run {program}: {exc.strerror}") from None
