"""What ds-helper shows without starting anything: --help, --list-recipes, --check, --cfg, --provenance, and the
plan --save-plan writes."""

from __future__ import annotations

import os
import textwrap
from typing import Dict, List, Optional

from ds_helper.compose import recipes
from ds_helper.compose.config import (
    check_recipe,
    config_yaml,
    hydra_context,
    load_bind_options,
    load_launchers,
    provenance,
)
from ds_helper.compose.overrides import check_override_keys
from ds_helper.compose.planner import save_plan
from ds_helper.compose.schema import Config, key_help
from ds_helper.rank.argv import DEEPSPEED_FLAGS, FLAGS, USAGE
from ds_helper.rank.errors import LaunchError, say
from ds_helper.rank.plan import Plan


def print_help() -> None:
    print(USAGE)
    print("\nBecome SCRIPT on this rank, with RANK, LOCAL_RANK, WORLD_SIZE, ... mapped from the process manager.")
    print("\nflags:")
    for names, value, text, _tab in FLAGS:
        print(f"  {' '.join([', '.join(names), value]).strip():<42} {text}")
    deepspeed = ", ".join(" ".join([names[0], value]).strip() for names, value, _text, _tab in DEEPSPEED_FLAGS)
    lines = textwrap.wrap(deepspeed, 42)
    for line in lines[:-1]:
        print(f"  {line}")
    print(f"  {lines[-1]:<42} {DEEPSPEED_FLAGS[0][2]}")
    with hydra_context():
        print("\nconfig groups (choose with GROUP=OPTION):")
        print("  launcher:")
        for spec in load_launchers():
            print(f"    {spec.name:<12} {spec.description}")
        print("  bind:")
        for name, option in load_bind_options().items():
            print(f"    {name:<12} {option.description}")
    print(f"  recipe: {', '.join(sorted(recipes.available())) or 'none'} (recipe=NAME; ds-helper --list-recipes)")
    print("\nkeys (set with KEY=VALUE; env.NAME=VALUE sets a variable verbatim, ~env.NAME unsets one):")
    keys = key_help()
    width = max(len(name) for name in keys)
    for name, text in keys.items():
        print(f"  {name:<{width}}  {text}")
    print("\nexample: mpiexec -n 4 ds-helper launcher=mpich script=train.py bind.cores=0-31 -- --lr 3e-4")


def list_recipes() -> int:
    found = recipes.available()
    for folder in recipes.team_folders():
        if not os.path.isdir(folder):
            say(f"{recipes.PATH_VAR} entry {folder} is not a folder", "note")
    rows = []
    for name in sorted(found):
        for index, item in enumerate([found[name], *found[name].shadows]):
            origin = "shipped" if item.origin == recipes.SHIPPED else item.origin
            if index == 0 and item.shadows:
                hidden = ", ".join("shipped" if s.origin == recipes.SHIPPED else s.origin for s in item.shadows)
                where = f"{origin}  (shadows {name} of {hidden})"
            elif index > 0:
                where = f"{origin}  [shadowed by {found[name].path}]"
            else:
                where = origin
            rows.append((name if index == 0 else f"({name})", recipes.description(item.path), where))
    if not rows:
        print(f"no recipes (ds-helper ships some; {recipes.PATH_VAR} adds team folders)")
        return 0
    name_width = max(len(r[0]) for r in rows)
    text_width = min(60, max(len(r[1]) for r in rows))
    print(f"{'NAME':<{name_width}}  {'DESCRIPTION':<{text_width}}  FROM")
    for name, text, where in rows:
        print(f"{name:<{name_width}}  {text:<{text_width}}  {where}")
    return 0


def check_recipes(paths: List[str]) -> int:
    targets = list(recipes.check_targets(paths))
    if not targets:
        raise LaunchError(f"--check: no recipe files in {' '.join(paths) or 'the recipe path'}")
    failed = 0
    for path in targets:
        problems = check_recipe(path) if os.path.isfile(path) else [LaunchError.at(path, None, "no such file")]
        for problem in problems:
            say(str(problem), "error")
        if problems:
            failed += 1
        else:
            print(f"ok {path}")
    return 2 if failed else 0


def print_config(config: Config) -> int:
    """--cfg job|all: the composed config as YAML."""
    print(config_yaml(config), end="")
    return 0


def print_provenance(overrides: List[str], script: Optional[str], env: Dict[str, Optional[str]]) -> int:
    """--provenance: each value of the composed config and the layer that set it."""
    check_override_keys(overrides)
    print("\n".join(provenance(overrides, script, env)))
    return 0


def save_plan_file(plan: Plan, path: str, script_args: List[str], hint: str) -> int:
    """--save-plan FILE: the plan, with the script's arguments of this command line (those after -- of a later
    ``--plan`` follow them), and a line saying how to use it (``hint``: job/launch.py, saved_plan_hint)."""
    plan.args = [*plan.args, *script_args]
    save_plan(plan, path)
    if not plan.log.quiet:
        say(f"plan saved to {path}; {hint}")
    return 0
