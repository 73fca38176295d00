"""A job's processes under the supervisor (job/supervisor.py): the local ranks' variables (``ds-helper
job.ranks=N`` with no manager, like ``torchrun --standalone``), each attempt's restart count, and the supervisor's
settings read from the plan, for local ranks and for a manager alike."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, Optional

from ds_helper.compose.schema import JobSpec
from ds_helper.job.supervisor import Settings, run_job
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.plan import LauncherSpec, Plan


def local_rank_env(spec: LauncherSpec, rank: int, size: int) -> Dict[str, str]:
    """The variables a rank started here gets: the first source name of each number in the local launcher."""
    numbers = {"rank": rank, "local_rank": rank, "world_size": size, "local_world_size": size}
    env: Dict[str, str] = {}
    for name, value in numbers.items():
        sources = getattr(spec, name)
        if not sources:
            raise LaunchError(f"launcher={spec.name}: no variable for {name} to start local ranks with")
        env[sources[0]] = str(value)
    return env


RESTART_COUNT_VARS = ("TORCHELASTIC_RESTART_COUNT", "DS_HELPER_RESTART_COUNT")
"""Each attempt's number (0 first) as torchrun exports it, so existing resume code works, and under our name."""


def restart_counts(attempt: int) -> Dict[str, str]:
    return dict.fromkeys(RESTART_COUNT_VARS, str(attempt))


def supervise(
    commands_for: Callable[[int], List[List[str]]],
    envs_for: Callable[[int], List[Dict[str, str]]],
    names: List[str],
    plan: Plan,
    spec: LauncherSpec,
    job: JobSpec,
    ranks_per_node: Optional[int] = None,
) -> int:
    """Run the job's processes under the supervisor (job/supervisor.py), like ``torchrun --standalone``: the
    local ranks (``names`` "rank N"), or one manager whose ``start.signals`` say what it passes on to its ranks;
    ``*_for(attempt)`` give each attempt's commands and environments (a fresh port each); ``ranks_per_node``
    places a manager's ranks for their log file names."""
    import gc

    gc.enable()  # off for a quick start (launcher/ds-helper); this process stays for the whole job
    ranks_here = spec.start.local
    log = plan.log

    def err_file(rank: int) -> str:
        """Where rank's stderr is kept (log.dir), placed as ds-helper asks a manager to: in blocks per node
        (without a number per node, all on one)."""
        node, local = divmod(rank, ranks_per_node) if ranks_per_node else (0, rank)
        return os.path.join(log.dir, log.err.format(rank=rank, local_rank=local, node_rank=node)) if log.dir else ""

    settings = Settings(
        grace=log.grace,
        timeout=job.timeout,
        label=log.prefix if log.label and ranks_here else "",
        signals=signal_numbers(spec.start.signals),
        err_file=err_file,
        failure=spec.start.failure,
        exit_codes=spec.start.exit_codes,
        shown=None if log.show is None else list(log.show),
    )
    with_counts = lambda attempt: [{**env, **restart_counts(attempt)} for env in envs_for(attempt)]  # noqa: E731
    return run_job(commands_for, with_counts, names, ranks_here, job.restarts, settings)


def signal_numbers(names: Mapping[str, Optional[str]]) -> Dict[int, Optional[int]]:
    """``{SIGHUP: SIGTERM, SIGUSR2: null}`` as numbers; a name that is no signal is one error line."""
    import signal

    def number(name: str) -> int:
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise LaunchError(f"start.signals: {name!r} is not a signal name (SIGTERM, SIGUSR1, ...)") from None

    return {number(got): None if sent is None else number(sent) for got, sent in names.items()}
