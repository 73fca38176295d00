"""Team recipes: where they are found, which one wins, and the checks that keep a recipe plain data.

A recipe is one YAML file in a *flat* folder (``recipes/ourjob.yaml`` is ``recipe=ourjob``). The folders are, in
order, each entry of ``$DS_HELPER_RECIPE_PATH`` (``os.pathsep``-separated, earlier wins) and then the recipes
shipped with ds-helper, so a team folder may shadow a shipped recipe. ``recipe=path/to/file.yaml`` names a file.

Hydra wants recipes in a ``recipe/`` group folder and appends ``hydra.searchpath`` entries after the packaged
configs, so a team folder could never shadow. Instead ``compose`` registers the recipes a launch needs in Hydra's
ConfigStore under group ``recipe`` (package ``_global_``), after this module has read and checked them: the
precedence is decided here, Hydra still composes (defaults lists, ``override /launcher: ...``, recipes built on
recipes), and no plugin acts for any other Hydra application in the environment.

This module reads YAML with PyYAML's safe loader only (no Hydra, no OmegaConf): Python tags are refused.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ds_helper.rank.errors import LaunchError
from ds_helper.rank.textfile import MAX_TEXT_CHARS, FileTooLarge, read_text

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
"""The top of a source checkout (three folders above this file): conf/ and recipes/ are there when not installed."""

PATH_VAR = "DS_HELPER_RECIPE_PATH"
LAUNCHER_PATH_VAR = "DS_HELPER_LAUNCHER_PATH"  # a site's launcher files: flat folders like the recipes' (config.py)
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SAFE_RESOLVERS = ("oc.env", "oc.select", "oc.decode", "oc.dict.keys", "oc.dict.values")
"""Resolvers a recipe may use. Hydra's ``now`` is refused: every rank composes on its own, at its own second.
Checked here in the text, and enforced by ``compose`` while resolving (through ``oc.decode`` too)."""
GROUPS = ("launcher", "bind")
_RESOLVER_CALL = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)\s*$", re.MULTILINE)
_RECIPE_REF = re.compile(r"^(?:/recipe/)?([^@/]+)(?:@(_here_|_global_))?$")
SHIPPED = "shipped"


@dataclass
class Recipe:
    name: str
    path: str
    origin: str  # "shipped", or the team folder it was found in
    shadows: List[Recipe] = field(default_factory=list)  # recipes of the same name further down the path


def shipped_folder(folder: str = "recipes") -> str:
    """A folder shipped with ds-helper (``recipes``, ``conf``): package ``ds_helper.FOLDER`` when installed, the
    folder at the top of a checkout otherwise."""
    spec = importlib.util.find_spec(f"ds_helper.{folder}")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.join(SOURCE_ROOT, folder)


def path_folders(variable: str, environ: Optional[Dict[str, str]] = None) -> List[str]:
    """The entries of a folder path variable (``:``-separated, like PATH), made absolute, in order (missing ones
    included); relative entries are taken from the current directory."""
    value = (os.environ if environ is None else environ).get(variable, "")
    return [os.path.abspath(entry) for entry in value.split(os.pathsep) if entry]


def team_folders(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """The entries of $DS_HELPER_RECIPE_PATH."""
    return path_folders(PATH_VAR, environ)


def folders() -> List[Tuple[str, str]]:
    """(folder, origin) in search order: team folders first, then the shipped recipes."""
    return [(folder, folder) for folder in team_folders()] + [(shipped_folder(), SHIPPED)]


NOT_A_RECIPE_NAME = "a recipe file is NAME.yaml, NAME of letters, digits, _ . -"


def recipe_name(path: str) -> Optional[str]:
    """The recipe a file name stands for, or None: the one rule --list-recipes, --check and recipe= share."""
    base = os.path.basename(path)
    name = base[: -len(".yaml")]
    return name if base.endswith(".yaml") and NAME.match(name) else None


def folder_files(folder: str) -> List[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if recipe_name(n) and os.path.isfile(os.path.join(folder, n))]


def available(extra_first: Optional[str] = None) -> Dict[str, Recipe]:
    """Every recipe name and the file that wins it; ``extra_first`` is a folder searched before all others."""
    search = ([(extra_first, extra_first)] if extra_first else []) + folders()
    found: Dict[str, Recipe] = {}
    seen = set()
    for folder, origin in search:
        if os.path.realpath(folder) in seen:
            continue
        seen.add(os.path.realpath(folder))
        for path in folder_files(folder):
            name = os.path.basename(path)[: -len(".yaml")]  # folder_files keeps recipe names only
            recipe = Recipe(name, path, origin)
            if name in found:
                found[name].shadows.append(recipe)
            else:
                found[name] = recipe
    return found


def is_path(value: str) -> bool:
    return "/" in value or value.endswith((".yaml", ".yml"))


def select(value: str) -> Tuple[str, Dict[str, Recipe]]:
    """``recipe=VALUE`` -> (the name to compose, the recipes visible to it)."""
    if is_path(value):
        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise LaunchError(f"recipe={value}: no such file")
        name = recipe_name(path)
        if name is None:
            raise LaunchError(f"recipe={value}: {NOT_A_RECIPE_NAME}")
        recipes = available(extra_first=os.path.dirname(path))  # its bases: its own folder first, as --check
        recipes[name] = Recipe(name, path, "command line")
        return name, recipes
    recipes = available()
    if value not in recipes:
        names = ", ".join(sorted(recipes)) or "none"
        raise LaunchError(f"recipe={value}: no such recipe (available: {names}; ds-helper --list-recipes)")
    return value, recipes


# ---------------------------------------------------------------------------------------------------- reading


def _yaml() -> Any:
    import yaml

    return yaml


MAX_VALUES = 10_000  # values once YAML aliases are expanded: stops "billion laughs" anchor bombs
MAX_DEPTH = 64


def read(path: str) -> str:
    try:
        return read_text(path)
    except FileTooLarge:
        raise LaunchError.at(path, None, f"larger than {MAX_TEXT_CHARS} characters: not a recipe") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError.at(path, None, f"cannot read: {exc}") from None


def _too_big(node: Any) -> Optional[str]:
    """Walk the node graph as it would expand (aliases count every time), within fixed bounds."""
    yaml = _yaml()
    stack = [(node, 1)]
    seen = 0
    while stack:
        current, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"more than {MAX_VALUES} values once YAML aliases are expanded"
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(current, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in current.value for part in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in current.value)
    return None


def load(path: str, text: str, kind: str = "recipe") -> Tuple[Dict[str, Any], Dict[str, int], List[LaunchError]]:
    """The file (a recipe, or ``kind``) as plain data, the line of each dotted key, and every data-safety problem."""
    yaml = _yaml()
    problems: List[LaunchError] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return {}, {}, [LaunchError.at(path, mark.line + 1 if mark else None, f"YAML syntax: {problem}")]
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        return {}, {}, [LaunchError.at(path, None, f"nested deeper than {MAX_DEPTH} levels")]
    lines: Dict[str, int] = {}
    if node is None:
        return {}, lines, [LaunchError.at(path, None, f"empty file: a {kind} is a YAML mapping")]
    oversized = _too_big(node)
    if oversized:
        return {}, lines, [LaunchError.at(path, None, oversized)]
    _walk(path, node, "", lines, problems, kind)
    if not problems and isinstance(node, yaml.MappingNode):
        problems = _check_strings(path, node)
    if problems:
        return {}, lines, problems
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # pragma: no cover - compose already parsed it
        mark = getattr(exc, "problem_mark", None)
        return {}, lines, [LaunchError.at(path, mark.line + 1 if mark else None, f"YAML: {exc}")]
    if not isinstance(data, dict):
        return {}, lines, [LaunchError.at(path, 1, f"a {kind} is a YAML mapping (key: value lines)")]
    package = _PACKAGE.search(text)
    if package and package.group(1) != "_global_":
        problems.append(LaunchError.at(path, None, f"'# @package {package.group(1)}': a recipe is always '_global_'"))
    problems += _check_defaults(path, data.get("defaults", []), lines.get("defaults"))
    for key in ("description",):
        if key in data and not isinstance(data[key], str):
            problems.append(LaunchError.at(path, lines.get(key), f"{key}: must be a string"))
    return data, lines, problems


def _walk(path: str, node: Any, prefix: str, lines: Dict[str, int], problems: List[LaunchError], kind: str) -> None:
    """Refuse Python tags, ``_target_`` and unsafe resolvers anywhere; note the line of each key."""
    yaml = _yaml()
    line = node.start_mark.line + 1
    if node.tag.startswith("tag:yaml.org,2002:python/") or node.tag.startswith("!"):
        problems.append(LaunchError.at(path, line, f"tag {node.tag!r} refused: a {kind} is plain data"))
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _walk(path, key_node, prefix, lines, problems, kind)
            key = str(key_node.value)
            dotted = f"{prefix}{key}"
            lines.setdefault(dotted, key_node.start_mark.line + 1)
            if dotted == "hydra":
                problems.append(
                    LaunchError.at(
                        path,
                        key_node.start_mark.line + 1,
                        f"hydra: refused: a {kind} cannot change "
                        "Hydra's own settings (search path, logging, output directories)",
                    )
                )
                continue
            if key == "_target_":
                problems.append(
                    LaunchError.at(
                        path,
                        key_node.start_mark.line + 1,
                        f"{dotted}: _target_ refused: a {kind} is data, it cannot name Python code to instantiate",
                    )
                )
            _walk(path, value_node, dotted + ".", lines, problems, kind)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _walk(path, item, prefix, lines, problems, kind)
    elif isinstance(node.value, str):
        for resolver in _RESOLVER_CALL.findall(node.value):
            if resolver not in SAFE_RESOLVERS:
                problems.append(
                    LaunchError.at(
                        path,
                        line,
                        f"resolver '{resolver}' refused in {node.value!r} "
                        f"(a {kind} may use {', '.join(SAFE_RESOLVERS)})",
                    )
                )


_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
STRING_KEYS = ("script", "python")
"""Top-level keys that hold one string, besides ``env`` (a mapping of strings) and ``args`` (a list of them)."""


def _retyped(node: Any) -> Optional[str]:
    """What a scalar reaches the script as when YAML 1.1 types it (``no`` -> False, ``0755`` -> 493, ``12:30``
    -> 750, ``3e-4`` -> 0.0003 once OmegaConf reads it), or None when the text passes as written."""
    if node.style is not None or node.tag == _NULL_TAG:  # quoted or a block: text; null is checked by the caller
        return None
    text = node.value
    if node.tag == _STR_TAG:
        # PyYAML calls 1e3 a string, OmegaConf's loader a float: anything Python reads as a number differently
        # from its text is flagged too.
        if not any(char.isdigit() for char in text):
            return None
        try:
            number = float(text)
        except ValueError:
            return None
        return None if str(number) == text else str(number)
    value = _yaml().SafeLoader("").construct_object(node, deep=True)
    return None if str(value) == text and isinstance(value, (int, float)) else str(value)


def _string_problem(path: str, key: str, node: Any, null_ok: bool) -> Optional[LaunchError]:
    """One value that must reach the script as a string, exactly as written."""
    yaml = _yaml()
    line = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
        return LaunchError.at(path, line, f"{key}: {kind} where a string belongs")
    if node.tag == _NULL_TAG and node.style is None:
        return (
            None
            if null_ok
            else LaunchError.at(path, line, f"{key}: null where a string belongs (quote it: '{node.value}')")
        )
    typed = _retyped(node)
    if typed is None:
        return None
    return LaunchError.at(
        path, line, f"{key}: {node.value} would reach the script as {typed!r} (YAML types it); quote it: '{node.value}'"
    )


def _check_strings(path: str, root: Any) -> List[LaunchError]:
    """env values, args and the script are passed verbatim: YAML's typing must not change them on the way."""
    yaml = _yaml()
    problems: List[Optional[LaunchError]] = []
    for key_node, value_node in root.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key == "env":
            if not isinstance(value_node, yaml.MappingNode):
                problems.append(LaunchError.at(path, line, "env: must be a mapping of NAME: value"))
                continue
            for name_node, item in value_node.value:
                problems.append(_string_problem(path, f"env name {name_node.value}", name_node, null_ok=False))
                problems.append(_string_problem(path, f"env.{name_node.value}", item, null_ok=True))
        elif key == "args":
            if not isinstance(value_node, yaml.SequenceNode):
                problems.append(LaunchError.at(path, line, "args: must be a list of strings"))
                continue
            problems += [_string_problem(path, "args", item, null_ok=False) for item in value_node.value]
        elif key in STRING_KEYS:
            problems.append(_string_problem(path, key, value_node, null_ok=True))
    return [problem for problem in problems if problem is not None]


_DEFAULTS_HELP = (
    "a recipe's defaults may only be '_self_', 'override /launcher: NAME', 'override /bind: NAME' or "
    "another recipe ('/recipe/NAME@_here_' or 'NAME')"
)


def _group_of(key: Any) -> str:
    """``'override /launcher'`` -> ``'launcher'``: the group a defaults entry's key names."""
    return str(key).removeprefix("override ").strip().lstrip("/")


def _check_defaults(path: str, defaults: Any, line: Optional[int]) -> List[LaunchError]:
    """An allow-list: choose a launcher or bind option, or build on another recipe. Nothing can reach a file."""
    if not isinstance(defaults, list):
        return [LaunchError.at(path, line, f"defaults: must be a list; {_DEFAULTS_HELP}")]
    problems = []
    for entry in defaults:
        if entry == "_self_":
            continue
        if isinstance(entry, str):
            match = _RECIPE_REF.match(entry)
            if match and NAME.match(match.group(1)) and ".." not in entry:
                continue
        elif isinstance(entry, dict) and len(entry) == 1:
            ((key, value),) = entry.items()
            group = _group_of(key)
            if str(key).startswith("override ") and group in GROUPS and isinstance(value, str) and NAME.match(value):
                if ".." not in value:
                    continue
        problems.append(LaunchError.at(path, line, f"defaults entry {entry!r} refused: {_DEFAULTS_HELP}"))
    return problems


def bases(data: Dict[str, Any]) -> List[str]:
    """The recipes a (checked) recipe builds on, by name."""
    names = []
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            match = _RECIPE_REF.match(entry)
            if match:
                names.append(match.group(1))
    return names


def choices(data: Dict[str, Any]) -> Dict[str, str]:
    """The group options a (checked) recipe chooses: {'launcher': 'mpich'}."""
    chosen = {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                chosen[_group_of(key)] = value
    return chosen


@dataclass
class Loaded:
    recipe: Recipe
    text: str
    data: Dict[str, Any]
    lines: Dict[str, int]


def chain(name: str, recipes: Dict[str, Recipe]) -> List[Loaded]:
    """The recipe and every recipe it builds on, bases first, each read and checked; the first problem raises."""
    order: List[Loaded] = []
    done: Dict[str, bool] = {}

    def visit(current: str, stack: Tuple[str, ...]) -> None:
        if current in stack:
            raise LaunchError(f"recipe {current}: builds on itself ({' -> '.join(stack + (current,))})")
        if current in done:
            return
        if current not in recipes:
            where = recipes[stack[-1]].path if stack else "recipe"
            names = ", ".join(sorted(recipes)) or "none"
            raise LaunchError(f"{where}: builds on recipe {current!r}, which does not exist (available: {names})")
        recipe = recipes[current]
        text = read(recipe.path)
        data, lines, problems = load(recipe.path, text)
        if problems:
            raise LaunchError(str(problems[0]))
        for base in bases(data):
            visit(base, stack + (current,))
        done[current] = True
        order.append(Loaded(recipe, text, data, lines))

    visit(name, ())
    return order


def description(path: str) -> str:
    """The ``description:`` key, else the first comment line that is not the ``@package`` header."""
    try:
        text = read(path)
    except LaunchError as exc:
        return f"(unreadable: {exc})"
    data, _, problems = load(path, text)
    if problems:
        return f"(invalid: {problems[0].message})"
    if isinstance(data.get("description"), str):
        return str(data["description"]).strip().splitlines()[0] if data["description"].strip() else ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not _PACKAGE.match(stripped):
            return stripped.lstrip("#").strip()
        if stripped and not stripped.startswith("#"):
            break
    return ""


def check_targets(paths: List[str]) -> Iterator[str]:
    """The recipe files named by --check's arguments (files, or flat folders), or every recipe on the path."""
    if not paths:
        for folder, _origin in folders():
            yield from folder_files(folder)
        return
    for path in paths:
        if os.path.isdir(path):
            yield from folder_files(path)
        else:
            yield path
