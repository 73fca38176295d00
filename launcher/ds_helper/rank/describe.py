"""A rank's dry run: where each number came from, every change to the environment, the binding and the command."""

from __future__ import annotations

from ds_helper.rank.plan import RANK_FIELDS

TYPE_CHECKING = False  # typing is not imported on a rank: the names below exist for mypy only
if TYPE_CHECKING:
    from typing import List, TextIO

    from ds_helper.rank.plan import Plan
    from ds_helper.rank.resolve import Launch


_SHELL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def shell_quote(arg: str) -> str:
    """``arg`` as a shell would need it typed: what ``shlex.quote`` does (shlex imports re, a rank does not)."""
    return arg if arg and _SHELL_SAFE.issuperset(arg) else "'" + arg.replace("'", "'\"'\"'") + "'"


def quote_command(argv: List[str]) -> str:
    return " ".join(map(shell_quote, argv))


def rank_label(launch: Launch) -> str:
    world = launch.ranks["world_size"]
    return f"rank {launch.ranks['rank']}" + (f"/{world}" if world is not None else "")


def describe(plan: Plan, launch: Launch, out: TextIO) -> None:
    """The dry run: where each number came from, every env change, and the command."""
    print(f"ds-helper dry run: {rank_label(launch)}, launcher={launch.launcher} ({launch.why})", file=out)
    for name in RANK_FIELDS:
        number = launch.ranks[name]
        shown = "-" if number is None else str(number)
        print(f"  {name:<17} {shown:<8} {launch.ranks.sources[name] or 'not given by the manager'}", file=out)
    print("  environment:", file=out)
    for change in launch.changes:
        text = "(unset)" if change.value is None else change.value
        print(f"    {change.name}={text}    # {change.why}", file=out)
    if launch.layout_table:
        print("  binding on this node:", file=out)
        for line in launch.layout_table.splitlines():
            print(f"    {line}", file=out)
    for note in launch.notes:
        print(f"  note: {note}", file=out)
    print(f"  command: {quote_command(launch.argv)}", file=out)
    if plan.run_mode == "inprocess":
        from ds_helper.rank.inprocess import in_process_blocker

        blocker = in_process_blocker(plan, launch)
        how = "in ds-helper's interpreter" if blocker is None else f"by exec ({blocker})"
        print(f"  run_mode=inprocess: the script runs {how}", file=out)
