"""The overrides of a command line, checked before Hydra sees them, and the config they compose to.

Unknown keys get a suggestion here (Hydra's own hint, 'use +key=', would mislead), and removals or packages that
ds-helper's keys do not take are refused naming what to write instead.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Dict, List, Optional, Tuple

from ds_helper.compose.config import compose_config
from ds_helper.compose.schema import Config, LauncherSpec
from ds_helper.rank.errors import LaunchError, did_you_mean


def check_override_keys(overrides: List[str]) -> None:
    """Unknown keys get a suggestion here; Hydra's own hint ('use +key=') would mislead.

    The key is walked through the schema's dataclasses as far as they go (``bind.corse`` is caught, while
    ``launcher.rank`` or a dict such as ``env`` is left to Hydra's own validation).
    """
    for override in overrides:
        _refuse_removal_and_packages(override)
        key = override.lstrip("+~").partition("=")[0].split("@", 1)[0]
        if key == "recipe":  # a group of its own, resolved by compose/recipes.py
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
                hint = did_you_mean(wrong, options) or _path_hint(override)
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


def compose_request(
    overrides: List[str], script: Optional[str], env: Dict[str, Optional[str]], dry_run: bool
) -> Tuple[Config, List[LauncherSpec]]:
    """The config the command line asks for, and auto's candidates. What ds-helper's own command line read verbatim
    is set after composing, past Hydra's grammar: the positional script or script=PATH, env.NAME=VALUE and
    ~env.NAME, and --dry-run."""
    check_override_keys(overrides)
    config, candidates = compose_config(overrides)
    if script is not None:
        config.script = script
    config.env.update(env)
    config.dry_run = config.dry_run or dry_run
    return config, candidates
