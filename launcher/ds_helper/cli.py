"""``ds-helper``: the one place every entry is routed and every error is printed.

Three entries, decided here in order: a rank of a job ds-helper started (no arguments, the plan in
``DS_HELPER_PLAN``), ``--plan FILE`` (a saved plan), and a command line to compose. The first two are the rank
side's standard-library path (``rank/``); only the third loads Hydra (``compose/``) and may start a whole job
(``job/``). Arrows point one way: cli -> job -> compose -> rank (docs/design.md).
"""

from __future__ import annotations

import os
import sys

from ds_helper.rank.argv import parse_argv
from ds_helper.rank.errors import LaunchError, say
from ds_helper.rank.inherit import hold_closed_fds
from ds_helper.rank.plan import PLAN_VAR

TYPE_CHECKING = False  # the rank's path imports neither typing nor the schema's dataclasses
if TYPE_CHECKING:
    from typing import List, Mapping, NoReturn, Optional

    from ds_helper.rank.argv import Request
    from ds_helper.rank.plan import Plan


def route(args: List[str]) -> int:
    """Every entry of ds-helper, in one place."""
    if not args and PLAN_VAR in os.environ:  # a rank of a job ds-helper started (job/launch.py)
        start_rank_from_environment()
    if args[:1] == ["--complete-words"]:  # a shell's Tab: words only, never an error (compose/complete.py)
        from ds_helper.compose.complete import print_answer

        return print_answer(args[1:])
    request = parse_argv(args)
    if request.help or request.version or request.list_recipes or request.check is not None or request.completion:
        return show(request)
    if request.plan is not None:
        start_rank_from_file(request, request.plan)
    return compose_and_start(request)


def show(request: Request) -> int:
    """What ds-helper shows without composing a launch: help, version, recipes, a shell's completion script."""
    if request.plan is not None:
        refuse_beside_plan(request)
    if request.version:
        return print_version()
    if request.completion is not None:  # run by a shell's rc file at every start: no Hydra
        from ds_helper.compose.complete import script

        print(script(request.completion), end="")
        return 0
    from ds_helper.compose import views

    if request.help:
        views.print_help()
        return 0
    if request.list_recipes:
        return views.list_recipes()
    return views.check_recipes(request.check or [])


def print_version() -> int:
    from importlib.metadata import PackageNotFoundError, version  # only here: off the per-rank path

    try:
        print(f"ds-helper {version('ds-helper')}")
    except PackageNotFoundError:
        raise LaunchError("--version: ds-helper is not installed (running from a source folder)") from None
    return 0


def refuse_beside_plan(request: Request) -> None:
    """Flags that compose or inspect a config have nothing to act on beside a saved plan."""
    for flag, given in (
        ("--cfg", request.show_cfg is not None),
        ("--provenance", request.provenance),
        ("--list-recipes", request.list_recipes),
        ("--check", request.check is not None),
        ("--save-plan", request.save_plan is not None),
    ):
        if given:
            raise LaunchError(f"{flag} cannot be combined with --plan: the plan is composed already (try --dry-run)")


def start_rank_from_file(request: Request, path: str) -> NoReturn:
    """``--plan FILE``: the per-rank path. Imports nothing outside the standard library (no compose)."""
    from ds_helper.rank.load import load_plan

    refuse_beside_plan(request)
    frozen = [*request.overrides]
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


def start_rank_from_environment() -> NoReturn:
    """A rank of a job ds-helper started: the plan is in ``PLAN_VAR``; standard library only, like ``--plan``."""
    from ds_helper.rank.load import plan_from_json

    env = dict(os.environ)
    start_rank(plan_from_json(env.pop(PLAN_VAR), PLAN_VAR), env, [])  # the loader refuses an empty command


def start_rank(plan: Plan, env: Mapping[str, str], extra_args: List[str]) -> NoReturn:
    """This rank, from its plan: resolve against the environment, then become the script."""
    from ds_helper.rank.become import become
    from ds_helper.rank.resolve import resolve

    if PLAN_VAR in env:  # inherited from a job around this process: never the script's
        env = {name: value for name, value in env.items() if name != PLAN_VAR}
    become(plan, resolve(plan, env, extra_args))


def compose_and_start(request: Request) -> int:
    """A command line to compose: print it (--cfg, --provenance), save it (--save-plan), start a job, or this rank."""
    from ds_helper.compose import views
    from ds_helper.compose.overrides import compose_request

    if request.provenance:
        return views.print_provenance(request.overrides, request.script, request.env)
    if request.save_plan is not None and request.show_cfg:
        raise LaunchError("--save-plan cannot be combined with --cfg: --cfg prints the config, --save-plan saves it")
    config, candidates = compose_request(request.overrides, request.script, request.env, request.dry_run)
    if request.show_cfg:
        return views.print_config(config)

    from ds_helper.compose.planner import make_plan
    from ds_helper.job.launch import plan_for_ranks, saved_plan_hint, start_if_job

    plan = make_plan(config, candidates)
    if request.save_plan is not None:
        hint = saved_plan_hint(plan, config.job, request.save_plan, os.environ)  # a job's mistakes before writing
        return views.save_plan_file(plan_for_ranks(plan, config.job), request.save_plan, request.script_args, hint)
    start_rank(start_if_job(plan, config.job, request.script_args, os.environ), os.environ, request.script_args)


_OUTPUT_FAILURES = ("ENOSPC", "EIO", "EFBIG", "EDQUOT")  # writing ds-helper's own output failed


def debug_from_environment() -> bool:
    """DS_HELPER_DEBUG set to anything but an empty or a false-looking value (0, false, no, off)."""
    return os.environ.get("DS_HELPER_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def asks_for_debug(args: List[str]) -> bool:
    """ds-helper's own --debug (not one among the script's arguments); read again only when an error is shown."""
    try:
        return parse_argv(args).debug
    except LaunchError:
        return False


def _silence_stdout() -> None:
    """The reader left or the disk is full: no second error when Python flushes stdout at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    hold_closed_fds()
    args = sys.argv[1:] if argv is None else argv
    debug = debug_from_environment()
    try:
        code = route(args)
        sys.stdout.flush()  # here, where a failure can still be reported as one line
        return code
    except LaunchError as exc:
        if debug or asks_for_debug(args):
            raise
        say(str(exc), "error")
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
        say(f"cannot write the output: {exc.strerror}", "error")
        return 2


if __name__ == "__main__":
    sys.exit(main())
