"""ds-helper's own command line, read before Hydra sees anything.

    ds-helper [FLAG ...] [OVERRIDE ...] [SCRIPT [SCRIPT_ARG ...]] [-- SCRIPT_ARG ...]

Hydra would take every token after ``--`` as an override, so the split happens here: the first
``--``, or the first token that is neither a flag nor an override (the script, as with torchrun and DeepSpeed),
ends ds-helper's part, and everything after it reaches the script byte for byte. DeepSpeed's launcher_helper
flags (``--launcher mpich --module --no_python --bind_cores_to_rank --bind_core_list L``) become the overrides
they mean, so DeepSpeed's MPICH runner works with ds-helper in place of launcher_helper.py.
"""

from __future__ import annotations

import os

from ds_helper.rank.checks import is_env_name
from ds_helper.rank.errors import LaunchError

TYPE_CHECKING = False  # every rank parses its command line: typing, dataclasses and re are not imported
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

# Keys whose values are CPU or device lists: an unquoted comma would make Hydra ask about sweeps.
LIST_KEYS = ("bind.cores", "bind.gpus")

# The flags whose value is one of the words their FLAGS row lists, and the Request attribute each sets.
_CHOICE_FLAGS = {"--cfg": "show_cfg", "--completion": "completion"}

# DeepSpeed launcher_helper's flags, and the override each one means.
_DEEPSPEED_SWITCHES = {
    "--module": "module=true",
    "--no_python": "no_python=true",
    "--bind_cores_to_rank": "bind.policy=cores",
}


class Request:
    """What the user asked for, before composition."""

    def __init__(self) -> None:
        self.overrides: List[str] = []
        self.env: Dict[str, Optional[str]] = {}  # env.NAME=VALUE / ~env.NAME, kept verbatim
        self.script: Optional[str] = None  # script=PATH, or given positionally (torchrun / DeepSpeed style)
        self.script_args: List[str] = []
        self.show_cfg: Optional[str] = None  # --cfg job|all
        self.help = False
        self.version = False  # --version
        self.debug = False
        self.list_recipes = False  # --list-recipes
        self.check: Optional[List[str]] = None  # --check [FILE|FOLDER ...]: recipes to validate (empty: all)
        self.provenance = False  # --provenance: which layer set each value
        self.dry_run = False  # --dry-run: the config's dry_run=true, set after composing
        self.save_plan: Optional[str] = None  # --save-plan FILE: compose once, write the plan, start nothing
        self.plan: Optional[str] = None  # --plan FILE: the per-rank path, no composition
        self.completion: Optional[str] = None  # --completion SHELL: print that shell's Tab completion script


def _quote_list_value(override: str) -> str:
    """``bind.cores=0,2,4`` -> ``bind.cores='0,2,4'``: a CPU list, not a sweep (ds-helper has no multirun)."""
    key, _, value = override.partition("=")
    if key.lstrip("+") in LIST_KEYS and "," in value and value[:1] not in "[\"'" and "'" not in value:
        return f"{key}='{value}'"
    return override


def _flag_value(argv: List[str], index: int) -> Tuple[str, int]:
    """The value of the flag at ``argv[index]`` (``--flag=V`` or ``--flag V``) and the index of its last token."""
    flag, equals, value = argv[index].partition("=")
    if equals:
        return value, index
    if index + 1 >= len(argv):
        raise LaunchError(f"{flag} needs a value")
    return argv[index + 1], index + 1


def _module_hint(following: List[str]) -> str:
    """``-m torch.distributed.run``: python's -m was meant, which ds-helper spells module=true."""
    name = following[0] if following else ""
    if not name or name.endswith(".py") or not all(part.isidentifier() for part in name.split(".")):
        return ""
    return f" (to run the module {name}, write module=true script={name})"


def parse_argv(argv: List[str]) -> Request:
    request = Request()
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            request.script_args = argv[index + 1 :]
            break
        if token in ("-h", "--help"):
            request.help = True
        elif token == "--version":
            request.version = True
        elif token == "--debug":
            request.debug = True
        elif token in ("-m", "--multirun"):
            raise LaunchError(
                "-m/--multirun is not supported: ds-helper starts one script per rank, it does not sweep"
                + _module_hint(argv[index + 1 : index + 2])
            )
        elif token.partition("=")[0] in _CHOICE_FLAGS:
            flag = token.partition("=")[0]
            value, index = _flag_value(argv, index)
            setattr(request, _CHOICE_FLAGS[flag], _choice(flag, value))
        elif token == "--list-recipes":
            request.list_recipes = True
        elif token == "--check":
            request.check = argv[index + 1 :]
            break
        elif token in ("--provenance", "--explain"):
            request.provenance = True
        elif token == "--dry-run":
            request.dry_run = True
        elif token in ("--save-plan", "--plan") or token.startswith(("--save-plan=", "--plan=")):
            flag = token.partition("=")[0]
            value, index = _flag_value(argv, index)
            if not value:
                raise LaunchError(f"{flag} needs a file name")
            attribute = flag[2:].replace("-", "_")
            earlier = getattr(request, attribute)
            if earlier is not None:
                raise LaunchError(f"{flag} given 2 times: {flag} {earlier}, {flag} {value}")
            setattr(request, attribute, value)
        elif token == "--launcher" or token.startswith("--launcher="):
            value, index = _flag_value(argv, index)
            request.overrides.append(f"launcher={value.lower()}")  # DeepSpeed lowercases it too
        elif token == "--bind_core_list" or token.startswith("--bind_core_list="):
            value, index = _flag_value(argv, index)
            request.overrides.append(_quote_list_value(f"bind.cores={value}"))
        elif token in _DEEPSPEED_SWITCHES:
            request.overrides.append(_DEEPSPEED_SWITCHES[token])
        elif token.startswith("-"):
            raise LaunchError(_unknown_option(token))
        elif (assignment := _env_override(token)) is not None:
            request.env[_env_name(assignment[0])] = assignment[1]
        elif token.startswith("~env."):
            request.env[_env_name(token[len("~env.") :])] = None
        elif token.lstrip("+").startswith("script="):  # a path, verbatim: Hydra's grammar would choke on '='
            if request.script is not None:
                raise LaunchError(f"script given 2 times: script={request.script}, {token.lstrip('+')}")
            request.script = token.partition("=")[2]
        elif is_override(token):
            request.overrides.append(_quote_list_value(token))
        else:
            if request.script is not None:
                raise LaunchError(f"script given twice: as script= and as {token!r}")
            request.script = token
            request.script_args = argv[index + 1 :]
            break
        index += 1
    _refuse_repeats(request.overrides)
    return request


def is_override(token: str) -> bool:
    """An override is ``KEY=VALUE`` (``+``/``++``/``~`` in front allowed) or ``~KEY``; anything else is the script.

    A path is never taken for an override (README, "The command line"): a token naming an existing file or
    folder is the script (``runs/lr=0.1/train.py``, as Hydra names its output folders), and so is any token
    whose part before ``=`` holds a ``/``, which no ds-helper key does.
    """
    key, equals, _ = token.partition("=")
    if not equals and not token.startswith("~"):
        return False
    return "/" not in key and not os.path.exists(token)


def _unknown_option(token: str) -> str:
    if os.path.exists(token):  # a script whose name starts with '-': python would take it for an option too
        return f"{token} is taken for an option; to run the file of that name write ./{token}"
    return f"unknown option {token} (ds-helper --help lists the options)"


# Keys that choose one thing: given twice, one choice would be silently dropped.
_SINGLE_CHOICE = ("launcher", "recipe")  # and script, which never reaches the overrides


def _refuse_repeats(overrides: List[str]) -> None:
    for key in _SINGLE_CHOICE:
        given = [o.lstrip("+") for o in overrides if o.lstrip("+").partition("=")[0] == key]
        if len(given) > 1:
            raise LaunchError(f"{key} given {len(given)} times: {', '.join(given)}")


def _env_override(token: str) -> Optional[Tuple[str, str]]:
    """``env.NAME=VALUE`` (also ``+env.`` and ``++env.``) -> (NAME, VALUE), the value verbatim; else None."""
    body = token[2:] if token.startswith("++") else token[1:] if token.startswith("+") else token
    if not body.startswith("env.") or "=" not in body:
        return None
    name, _, value = body[len("env.") :].partition("=")
    return name, value


def _env_name(name: str) -> str:
    if not is_env_name(name):
        raise LaunchError(f"env.{name}: not a valid environment variable name")
    return name


USAGE = "usage: ds-helper [FLAG ...] [OVERRIDE ...] [SCRIPT [ARG ...]] [-- ARG ...]"


# ds-helper's own flags as data: --help lists them (compose/views.py), Tab completes them (compose/complete.py).
# (names, VALUE as --help writes it, help, what Tab offers for VALUE: CHOICES the words of VALUE between bars,
# FILES file names, FILES_TO_END file names for every word after the flag, LAUNCHERS the launcher options).
CHOICES, FILES, FILES_TO_END, LAUNCHERS = "choices", "files", "files-to-end", "launchers"
FLAGS = (
    (("--cfg",), "job|all", "print the composed config and exit", CHOICES),
    (("--dry-run",), "", "same as dry_run=true: show ranks, env changes and the command; start nothing", ""),
    (("--provenance", "--explain"), "", "print each value of the composed config and the layer that set it", ""),
    (("--list-recipes",), "", "list the recipes recipe=NAME can choose, where each comes from", ""),
    (
        ("--check",),
        "[FILE|FOLDER ...]",
        "validate recipes (default: every recipe on the path); start nothing",
        FILES_TO_END,
    ),
    (("--save-plan",), "FILE", "compose and check once, write the launch plan to FILE (JSON); start nothing", FILES),
    (("--plan",), "FILE", "start this rank from a saved plan: no composition, standard library only", FILES),
    (("--completion",), "bash|zsh|fish", "print the shell's Tab completion script (README: Tab completion)", CHOICES),
    (("--debug",), "", "show the traceback of an error (also DS_HELPER_DEBUG=1)", ""),
    (("--version",), "", "print the installed version and exit", ""),
    (("-h", "--help"), "", "this help", ""),
)
DEEPSPEED_HELP = "DeepSpeed launcher_helper's flags, same meaning"
DEEPSPEED_FLAGS = (
    (("--launcher",), "NAME", DEEPSPEED_HELP, LAUNCHERS),
    (("--module",), "", DEEPSPEED_HELP, ""),
    (("--no_python",), "", DEEPSPEED_HELP, ""),
    (("--bind_cores_to_rank",), "", DEEPSPEED_HELP, ""),
    (("--bind_core_list",), "L", DEEPSPEED_HELP, ""),
)


def choices(flag: str) -> List[str]:
    """The values a flag of CHOICES takes, as its row of FLAGS writes them."""
    return next(row[1].split("|") for row in FLAGS if flag in row[0])


def _choice(flag: str, value: str) -> str:
    allowed = choices(flag)
    if value not in allowed:
        spelled = [f"{flag} {choice}" for choice in allowed]
        raise LaunchError(f"{flag} {value}: expected {', '.join(spelled[:-1])} or {spelled[-1]}")
    return value
