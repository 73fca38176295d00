"""``ds-helper``: argv -> compose -> plan -> resolve -> run, and the one place errors are printed.

Only the standard library is imported at module level: Hydra is loaded when a config has to be composed, and
never on the ``--plan FILE`` path, which is what every rank of a large job runs (tests/test_plan.py checks it).
"""

from __future__ import annotations

import os
import sys

from ds_helper.argv import parse_argv
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.inherit import hold_closed_fds, say

TYPE_CHECKING = False  # the --plan path imports neither typing nor the schema's dataclasses
if TYPE_CHECKING:
    from typing import List, Mapping, NoReturn, Optional

    from ds_helper.argv import Request
    from ds_helper.compose.schema import Config, LauncherSpec
    from ds_helper.rank.plan import Plan

USAGE = "usage: ds-helper [FLAG ...] [OVERRIDE ...] [SCRIPT [ARG ...]] [-- ARG ...]"
FLAGS = (
    ("--cfg job|all", "print the composed config and exit"),
    ("--dry-run", "same as dry_run=true: show ranks, env changes and the command; start nothing"),
    ("--provenance (or --explain)", "print each value of the composed config and the layer that set it"),
    ("--list-recipes", "list the recipes recipe=NAME can choose, where each comes from"),
    ("--check [FILE|FOLDER ...]", "validate recipes (default: every recipe on the path); start nothing"),
    ("--save-plan FILE", "compose and check once, write the launch plan to FILE (JSON); start nothing"),
    ("--plan FILE", "start this rank from a saved plan: no composition, standard library only"),
    ("--debug", "show the traceback of an error (also DS_HELPER_DEBUG=1)"),
    ("--version", "print the installed version and exit"),
    ("-h, --help", "this help"),
    ("--launcher NAME, --module, --no_python,", ""),
    ("--bind_cores_to_rank, --bind_core_list L", "DeepSpeed launcher_helper's flags, same meaning"),
)


def _suggest(word: str, options: List[str]) -> str:
    import difflib  # only on a mistake: kept off the per-rank start-up

    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_override_keys(overrides: List[str]) -> None:
    """Unknown keys get a suggestion here; Hydra's own hint ('use +key=') would mislead.

    The key is walked through the schema's dataclasses as far as they go (``bind.corse`` is caught, while
    ``launcher.rank`` or a dict such as ``env`` is left to Hydra's own validation).
    """
    from dataclasses import fields, is_dataclass

    from ds_helper.compose.schema import Config

    for override in overrides:
        _refuse_removal_and_packages(override)
        key = override.lstrip("+~").partition("=")[0].split("@", 1)[0]
        if key == "recipe":  # a group of its own, resolved by compose (ds_helper/recipe.py)
            continue
        node: object = Config()
        walked: List[str] = []
        for part in key.split("."):
            if not is_dataclass(node):
                break
            names = sorted(f.name for f in fields(node))
            if part not in names:
                prefix = ".".join(walked)
                options = [f"{prefix}.{n}" if prefix else n for n in names]
                wrong = f"{prefix}.{part}" if prefix else part
                hint = _suggest(wrong, options) or _path_hint(override)
                raise LaunchError(f"unknown key {wrong!r} in {override!r}{hint}")
            walked.append(part)
            node = getattr(node, part)


# What removing a key would mean, where ds-helper can say what to write instead (``~env.NAME`` unsets a variable
# and ``~args`` / ``~env`` empty those lists; every other removal would only leave a hole Hydra cannot fill).
_REMOVAL_HINTS = {
    "launcher": "the process manager cannot be removed; choose one with launcher=NAME (launcher=auto detects it)",
    "script": "the script cannot be removed; give one as script=train.py or as the first argument",
    "recipe": "there is no recipe to remove; a recipe is only ever added, with recipe=NAME",
    "bind": "binding cannot be removed; turn it off with bind=none",
}
_REMOVABLE = ("env", "args")


def _refuse_removal_and_packages(override: str) -> None:
    """``~KEY`` and ``GROUP@PACKAGE=...``: one line naming the key and what to write, not Hydra's internals."""
    key = override.lstrip("+~").partition("=")[0]
    if "@" in key:
        name = key.split("@", 1)[0]
        raise LaunchError(
            f"{override}: ds-helper's keys take no @package; write {name}={override.partition('=')[2] or 'VALUE'}"
        )
    if override.startswith("~") and key not in _REMOVABLE:
        hint = _REMOVAL_HINTS.get(key, f"ds-helper's settings cannot be removed; set {key}=VALUE instead")
        raise LaunchError(f"~{key}: {hint}")


def _path_hint(override: str) -> str:
    """A token taken for an override may have been meant as a script that is not there (README: The command line)."""
    if override[:1] in "+~" or not override.endswith(".py"):
        return ""
    return f" (a script? no such file here; a path with '=' is always a script when written ./{override})"


def print_help() -> None:
    from ds_helper.compose.config import hydra_context, load_bind_options, load_launchers
    from ds_helper.compose.schema import key_help

    print(USAGE)
    print("\nBecome SCRIPT on this rank, with RANK, LOCAL_RANK, WORLD_SIZE, ... mapped from the process manager.")
    print("\nflags:")
    for flag, text in FLAGS:
        print(f"  {flag:<42} {text}")
    with hydra_context():
        print("\nconfig groups (choose with GROUP=OPTION):")
        print("  launcher:")
        for spec in load_launchers():
            print(f"    {spec.name:<12} {spec.description}")
        print("  bind:")
        for name, option in load_bind_options().items():
            print(f"    {name:<12} {option.description}")
    from ds_helper.compose.recipes import available

    print(f"  recipe: {', '.join(sorted(available())) or 'none'} (recipe=NAME; ds-helper --list-recipes)")
    print("\nkeys (set with KEY=VALUE; env.NAME=VALUE sets a variable verbatim, ~env.NAME unsets one):")
    keys = key_help()
    width = max(len(name) for name in keys)
    for name, text in keys.items():
        print(f"  {name:<{width}}  {text}")
    print("\nexample: mpiexec -n 4 ds-helper launcher=mpich script=train.py bind.cores=0-31 -- --lr 3e-4")


def list_recipes() -> int:
    from ds_helper.compose import recipes

    found = recipes.available()
    for folder in recipes.team_folders():
        if not os.path.isdir(folder):
            say(f"ds-helper: note: {recipes.PATH_VAR} entry {folder} is not a folder")
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
    from ds_helper.compose import recipes
    from ds_helper.compose.config import check_recipe

    targets = list(recipes.check_targets(paths))
    if not targets:
        raise LaunchError(f"--check: no recipe files in {' '.join(paths) or 'the recipe path'}")
    failed = 0
    for path in targets:
        problems = check_recipe(path) if os.path.isfile(path) else [recipes.Problem(path, None, "no such file")]
        for problem in problems:
            say(f"ds-helper: error: {problem}")
        if problems:
            failed += 1
        else:
            print(f"ok {path}")
    return 2 if failed else 0


def compose_request(request: Request) -> tuple[Config, List[LauncherSpec]]:
    """The config the command line asks for (overrides, positional script, env.*), and auto's candidates."""
    check_override_keys(request.overrides)

    from ds_helper.compose.config import compose_config

    config, candidates = compose_config(request.overrides)
    if request.script is not None:  # set after composing: a path reaches us verbatim, not via Hydra's grammar
        config.script = request.script
    config.env.update(request.env)
    return config, candidates


def _refuse_with_plan(request: Request) -> None:
    """Flags that compose or inspect a config have nothing to act on beside a saved plan."""
    for flag, given in (
        ("--cfg", request.show_cfg is not None),
        ("--provenance", request.provenance),
        ("--list-recipes", request.list_recipes),
        ("--check", request.check is not None),
    ):
        if given:
            raise LaunchError(f"{flag} cannot be combined with --plan: the plan is composed already (try --dry-run)")


def run_plan(request: Request, path: str) -> int:
    """``--plan FILE``: the per-rank path. Imports nothing outside the standard library (no compose)."""
    from ds_helper.rank.plan import load_plan

    if request.save_plan is not None:
        raise LaunchError("--save-plan cannot be combined with --plan: save a plan from overrides instead")
    frozen = [o for o in request.overrides if o != "dry_run=true"]
    frozen += [f"env.{name}" if value is not None else f"~env.{name}" for name, value in request.env.items()]
    if frozen:
        raise LaunchError(
            f"--plan {path} is frozen: overrides ({', '.join(frozen)}) cannot change it; save a new one with "
            "ds-helper OVERRIDES --save-plan FILE (only --dry-run and script arguments after -- are allowed)"
        )
    if request.script is not None:
        raise LaunchError(
            f"--plan {path} names its script already; {request.script!r} is not allowed here "
            "(give the script's arguments after --)"
        )
    plan = load_plan(path)
    if request.dry_run:  # a view of the same launch, not a change to it
        plan.dry_run = True
    start_rank(plan, os.environ, request.script_args)


def start_rank(plan: Plan, env: Mapping[str, str], extra_args: List[str]) -> NoReturn:
    """This rank, from its plan: resolve against the environment, then become the script."""
    from ds_helper.rank.become import become
    from ds_helper.rank.resolve import resolve

    become(plan, resolve(plan, env, extra_args))


def run_env_plan() -> NoReturn:
    """A rank of a job ds-helper started: the plan is in ``PLAN_VAR``; standard library only, like ``--plan``."""
    from ds_helper.rank.plan import PLAN_VAR, plan_from_json

    env = dict(os.environ)
    start_rank(plan_from_json(env.pop(PLAN_VAR), PLAN_VAR), env, [])  # the loader refuses an empty command


def run(request: Request) -> int:
    if request.help:
        print_help()
        return 0
    if request.version:
        from importlib.metadata import PackageNotFoundError, version  # only here: off the per-rank path

        try:
            print(f"ds-helper {version('ds-helper')}")
        except PackageNotFoundError:
            raise LaunchError("--version: ds-helper is not installed (running from a source folder)") from None
        return 0
    if request.plan is not None:
        _refuse_with_plan(request)
    if request.list_recipes:
        return list_recipes()
    if request.check is not None:
        return check_recipes(request.check)
    if request.provenance:
        check_override_keys(request.overrides)
        from ds_helper.compose.config import provenance

        print("\n".join(provenance(request.overrides, request.script, request.env)))
        return 0
    if request.plan is not None:
        return run_plan(request, request.plan)
    if request.save_plan is not None and request.show_cfg:
        raise LaunchError("--save-plan cannot be combined with --cfg: --cfg prints the config, --save-plan saves it")
    config, candidates = compose_request(request)
    if request.show_cfg:
        from ds_helper.compose.config import config_yaml

        print(config_yaml(config), end="")
        return 0

    from ds_helper.job import launch as job
    from ds_helper.rank.bind import requested
    from ds_helper.rank.plan import make_plan, save_plan

    plan = make_plan(config, candidates)
    starting = job.starting_spec(plan, config.job, os.environ) if request.save_plan is None else None
    if starting is not None:
        job.start_job(plan, starting, config.job, request.script_args, os.environ, requested(plan.bind))
    if job.declared(config.job):  # under a manager: each rank checks the manager did what job.* says
        plan = job.with_layout(plan, job.job_shape(config.job))
    if request.save_plan is not None:
        # The script's arguments on this command line belong to the plan; those after -- of `--plan` follow them.
        plan.args = [*plan.args, *request.script_args]
        save_plan(plan, request.save_plan)
        if not plan.log.quiet:
            saved = request.save_plan
            say(f"ds-helper: plan saved to {saved}; start each rank with: ds-helper --plan {saved}")
        return 0
    start_rank(plan, os.environ, request.script_args)


_OUTPUT_FAILURES = ("ENOSPC", "EIO", "EFBIG", "EDQUOT")  # writing ds-helper's own output failed


def debug_from_environment() -> bool:
    """DS_HELPER_DEBUG set to anything but an empty or a false-looking value (0, false, no, off)."""
    return os.environ.get("DS_HELPER_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _silence_stdout() -> None:
    """The reader left or the disk is full: no second error when Python flushes stdout at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    hold_closed_fds()
    debug = debug_from_environment()
    args = sys.argv[1:] if argv is None else argv
    try:
        from ds_helper.rank.plan import PLAN_VAR

        if not args and PLAN_VAR in os.environ:  # a rank of a job ds-helper started (ds_helper.job.launch)
            run_env_plan()
        request = parse_argv(args)
        debug = debug or request.debug  # ds-helper's own --debug, not one among the script's arguments
        code = run(request)
        sys.stdout.flush()  # here, where a failure can still be reported as one line
        return code
    except LaunchError as exc:
        if debug:
            raise
        say(f"ds-helper: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ds-helper --help | head`: the reader left; no traceback, and no second error at exit.
        _silence_stdout()
        return 1
    except OSError as exc:
        import errno  # only on this failure: kept off the per-rank start-up

        if debug or errno.errorcode.get(exc.errno or 0) not in _OUTPUT_FAILURES:
            raise
        _silence_stdout()
        say(f"ds-helper: error: cannot write the output: {exc.strerror}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
