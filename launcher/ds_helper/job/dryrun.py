"""The job's dry run: the shape, the command that starts it, each rank's place and binding; nothing starts."""

from __future__ import annotations

import os
from typing import List, Tuple

from ds_helper.job.shape import Shape
from ds_helper.rank import bind
from ds_helper.rank.describe import shell_quote
from ds_helper.rank.plan import PLAN_VAR, LauncherSpec, Plan, command_argv


def job_size(shape: Shape) -> str:
    return "the allocation's ranks" if shape.ranks is None else f"{shape.ranks} ranks"


def shown_command(command: List[str], plan_json: str) -> str:
    """The command as a shell would take it, with the plan's value shown by name."""

    def shown(arg: str) -> str:
        before, found, after = arg.partition(plan_json)
        if not found:
            return shell_quote(arg)
        return "".join([shell_quote(before) if before else "", f'"${PLAN_VAR}"', shell_quote(after) if after else ""])

    return " ".join(shown(arg) for arg in command)


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


def print_job(plan: Plan, spec: LauncherSpec, shape: Shape, command: List[str], local: bool, text: str) -> None:
    how = "started by ds-helper itself (no manager)" if local else f"started by {command[0]}"
    print(f"ds-helper dry run: job of {job_size(shape)}, launcher={spec.name}, {how}")
    nodes = shape.nodes if shape.nodes is not None else "manager decides"
    print(f"  nodes: {nodes}, ranks per node: {shape.ranks_per_node or 'manager decides'}")
    print(f"  MASTER_PORT: {plan.job_port}; the plan ({len(text)} bytes) travels in {PLAN_VAR}")
    print(f"  command: {shown_command(command, text)}")
    rows = layout_rows(shape)
    if rows:
        header = ("rank", "node", "host", "local rank")
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        print("  layout:")
        for row in (header, *rows):
            print("    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    table = node_binding(plan, spec, shape)
    if table:
        print("  binding of each node's local ranks (as on this machine):")
        for line in table.splitlines():
            print(f"    {line}")
    print(f"  each rank runs: {shown_command([*command_argv(plan.command), *plan.args], text)}")
