"""The job's dry run: the shape, the command that starts it, each rank's place and binding; nothing starts."""

from __future__ import annotations

import os
from typing import List, Mapping, Tuple

from ds_helper.job.local import local_rank_env
from ds_helper.job.shape import Shape, runs_here
from ds_helper.job.start import MAX_ARG_STRLEN
from ds_helper.rank import bind
from ds_helper.rank.describe import shell_quote
from ds_helper.rank.plan import PLAN_VAR, LauncherSpec, Plan, command_argv


def job_size(shape: Shape) -> str:
    return "the allocation's ranks" if shape.ranks is None else f"{shape.ranks} ranks"


def shown_command(command: List[str], plan_json: str, value: str = f'"${PLAN_VAR}"') -> str:
    """The command as a shell would take it, with the plan's value shown as ``value`` (by name, by default)."""

    def shown(arg: str) -> str:
        before, found, after = arg.partition(plan_json)
        if not found:
            return shell_quote(arg)
        return "".join([shell_quote(before) if before else "", value, shell_quote(after) if after else ""])

    return " ".join(shown(arg) for arg in command)


def pasteable(command: List[str], plan_json: str, path: str, env: Mapping[str, str]) -> str:
    """A command that starts what the dry run shows when pasted into a shell: the plan read from ``path`` wherever
    it travels (``PLAN_VAR`` and the manager's arguments), with ``env`` set in front."""
    value = f'"$(cat {shell_quote(path)})"'
    settings = [f"{name}={shell_quote(setting)}" for name, setting in env.items()]
    return " ".join([*settings, f"{PLAN_VAR}={value}", shown_command(command, plan_json, value)])


def write_plan_for_dry_run(plan_json: str) -> str:
    """The plan in a new file of the temporary folder, which the dry run's command reads."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="ds-helper-plan-", suffix=".json")
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(plan_json)
    return path


def layout_rows(shape: Shape) -> List[Tuple[str, ...]]:
    """One row per rank: rank, node, host, local rank (the block layout)."""
    per_node, total = shape.ranks_per_node, shape.ranks
    if per_node is None or total is None:
        return []
    rows: List[Tuple[str, ...]] = []
    for rank in range(total):
        node, local = divmod(rank, per_node)
        host = shape.hosts[node] if node < len(shape.hosts) else ("this machine" if shape.nodes == 1 else "?")
        rows.append((str(rank), str(node), host, str(local)))
    return rows


def node_binding(plan: Plan, spec: LauncherSpec, shape: Shape) -> str:
    """Cores, memory and GPUs of each local rank, as on this machine (the same on every node like it)."""
    if shape.ranks_per_node is None:
        return ""
    return bind.for_rank(
        plan.bind,
        local_rank=0,
        local_world_size=shape.ranks_per_node,
        launcher=spec.name,
        env=os.environ,
        dry_run=False,
    ).table


def print_job(
    plan: Plan, spec: LauncherSpec, shape: Shape, command: List[str], local: bool, text: str, size: int
) -> None:
    how = "started by ds-helper itself (no manager)" if local else f"started by {command[0]}"
    print(f"ds-helper dry run: job of {job_size(shape)}, launcher={spec.name}, {how}")
    nodes = shape.nodes if shape.nodes is not None else "manager decides"
    print(f"  nodes: {nodes}, ranks per node: {shape.ranks_per_node or 'manager decides'}")
    fits = "" if size <= MAX_ARG_STRLEN else " (too large: the job would be refused)"
    print(f"  MASTER_PORT: {plan.job_port}; the plan ({size} bytes of {MAX_ARG_STRLEN} allowed) in {PLAN_VAR}{fits}")
    path = write_plan_for_dry_run(text)
    if local:
        print(f"  plan written to {path}; ds-helper starts and supervises all {shape.ranks} ranks, rank 0 alone is:")
        print(f"  command: {pasteable(command, text, path, local_rank_env(spec, 0, shape.ranks or 1))}")
    else:
        print(f"  plan written to {path}; to start the job:")
        print(f"  command: {pasteable(command, text, path, {})}")
    rows = layout_rows(shape)
    if rows:
        header = ("rank", "node", "host", "local rank")
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        print("  layout:")
        for row in (header, *rows):
            print("    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if runs_here(local, shape):
        table = node_binding(plan, spec, shape)
        if table:
            print("  binding of each node's local ranks (as on this machine):")
            for line in table.splitlines():
                print(f"    {line}")
    elif bind.asks_for_binding(plan.bind):
        print(
            f"  binding (bind.policy={plan.bind.policy}): not checked here, the ranks run on other machines; each "
            "rank binds on its node when it starts, and an impossible binding stops it there"
        )
    print(f"  each rank runs: {shown_command([*command_argv(plan.command), *plan.args], text)}")
