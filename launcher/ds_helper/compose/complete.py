"""Tab completion: the words a shell offers after ``ds-helper``, and the per-shell scripts that ask for them.

``ds-helper --completion bash|zsh|fish`` prints a script (the file ``completion/ds-helper.SHELL``); on every Tab
that script runs ``ds-helper --complete-words WORD ... CURRENT`` (the words before the cursor, then the word
being typed) and reads back:

    MODE        words: only the candidates below; files / dirs: file (folder) names of the value after PREFIX,
                beside the candidates below; default: the shell's own completion (the script's arguments)
    PREFIX      the part of the current word before a file name (``job.hostfile=``, ``--plan=``), else empty
    CANDIDATE   one whole word a line; one ending in ``=`` or ``.`` takes no space after it

A Tab must be answered before a person notices: nothing here composes, reads YAML or imports Hydra. The facts come
from where ``--help`` takes them: flags from rank/argv.py's table, keys from the schema's dataclasses, group options
from the option files' names (shipped, and ``$DS_HELPER_LAUNCHER_PATH``), recipes from the recipe folders. A
folder that cannot be read gives no candidates, silently: nothing may reach the user's command line but words.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from ds_helper.compose import recipes
from ds_helper.compose.schema import FOLDER, key_fields
from ds_helper.rank import argv
from ds_helper.rank.argv import DEEPSPEED_FLAGS, FLAGS, is_override

SHELLS = tuple(argv.choices("--completion"))
WORDS, FILES, FOLDERS, DEFAULT = "words", "files", "dirs", "default"

Answer = Tuple[str, str, List[str]]  # (mode, prefix, candidates)
Flag = Tuple[Tuple[str, ...], str, str, str]  # a row of rank/argv.py's FLAGS


def script(shell: str) -> str:
    """The completion script for ``shell``, from its template in ``completion/``."""
    from importlib.resources import files

    return files("ds_helper.compose").joinpath("completion", f"ds-helper.{shell}").read_text(encoding="utf-8")


def _names(folder: str) -> List[str]:
    """The option (or recipe) names of a flat folder of ``NAME.yaml`` files; none if it cannot be read."""
    return [os.path.basename(path)[: -len(".yaml")] for path in recipes.folder_files(folder)]


def options_on_disk(group: str) -> List[str]:
    """A group's options as ``GROUP=NAME`` chooses them, read from the folders without Hydra (for a Tab): the
    shipped files, and a site's launcher folders; compose/config.py's group_options asks Hydra's sources."""
    names = set(_names(os.path.join(recipes.shipped_folder("conf"), group)))
    if group == "launcher":
        for folder in recipes.path_folders(recipes.LAUNCHER_PATH_VAR):
            names.update(_names(folder))
    return sorted(names)


def _all_flags() -> Dict[str, Flag]:
    return {name: flag for flag in (*FLAGS, *DEEPSPEED_FLAGS) for name in flag[0]}


def _flag_value(flag: Flag, prefix: str, value: str) -> Answer:
    """The value of a flag (``--cfg j`` or ``--cfg=j``)."""
    _names_, metavar, _help, kind = flag
    if kind in (argv.FILES, argv.FILES_TO_END):
        return FILES, prefix, []
    if kind == argv.CHOICES:
        return WORDS, "", [prefix + choice for choice in metavar.split("|") if choice.startswith(value)]
    if kind == argv.LAUNCHERS:
        return WORDS, "", [prefix + name for name in options_on_disk("launcher") if name.startswith(value)]
    return WORDS, "", []


def _schema_keys() -> Dict[str, str]:
    """Every key of the schema (``bind.cores``) and its type, as ``--help`` lists them."""
    return {name: str(item.type) for name, item in key_fields().items()}


def _key_words(current: str) -> List[str]:
    """Keys one level at a time: ``job.`` first, then ``job.ranks=``; a group is both (``bind=``, ``bind.``)."""
    body = current.lstrip("+~")
    sign = current[: len(current) - len(body)]
    keys = _schema_keys()
    depth = body.count(".")
    words = []
    for name, kind in keys.items():
        if name.count(".") != depth or not name.startswith(body):
            continue
        section = any(other.startswith(name + ".") for other in keys) or kind.startswith("Dict")
        if section:
            words.append(f"{sign}{name}.")
        if not section or name in recipes.GROUPS:
            words.append(f"{sign}{name}=")
    if depth == 0 and "recipe".startswith(body) and not sign.startswith("~"):
        words.append(f"{sign}recipe=")
    return sorted(words)


def _value_words(key: str, value: str) -> Answer:
    bare = key.lstrip("+")
    prefix = key + "="
    if bare == "recipe":
        if recipes.is_path(value):
            return FILES, prefix, []
        names = recipes.available()
        return WORDS, "", [prefix + name for name in sorted(names) if name.startswith(value)]
    if bare in recipes.GROUPS:
        return WORDS, "", [prefix + name for name in options_on_disk(bare) if name.startswith(value)]
    item = key_fields().get(bare)
    if item is None:
        return WORDS, "", []
    path = item.metadata.get("path")
    if path:
        return (FOLDERS if path == FOLDER else FILES), prefix, []
    if str(item.type) == "bool":
        return WORDS, "", [prefix + word for word in ("true", "false") if word.startswith(value)]
    return WORDS, "", []


def _after(before: List[str]) -> str:
    """Where the words before the cursor leave it: ``options``, ``default`` (the script's own arguments), a
    value-taking flag's name (its value comes next), or FILES_TO_END (``--check``'s files and folders)."""
    known = _all_flags()
    index = 0
    while index < len(before):
        token = before[index]
        if token == "--":
            return DEFAULT
        if token.startswith("-"):
            flag = known.get(token.partition("=")[0])
            if flag is not None and flag[3] == argv.FILES_TO_END:
                return argv.FILES_TO_END
            if flag is not None and flag[1] and "=" not in token:
                if index + 1 == len(before):
                    return token
                index += 1  # its value
        elif not is_override(token):
            return DEFAULT  # the script: what follows is its own
        index += 1
    return "options"


def complete(words: List[str]) -> Answer:
    """What Tab offers for ``words`` (the words after ``ds-helper`` up to the cursor; the last one is being typed)."""
    *before, current = words or [""]
    where = _after(before)
    if where == DEFAULT:
        return DEFAULT, "", []
    if where == argv.FILES_TO_END:
        return FILES, "", []
    known = _all_flags()
    if where != "options":
        return _flag_value(known[where], "", current)
    if current.startswith("-"):
        name, equals, value = current.partition("=")
        if equals:
            flag = known.get(name)
            return _flag_value(flag, name + "=", value) if flag is not None and flag[1] else (WORDS, "", [])
        return WORDS, "", sorted(name for name in known if name.startswith(current))
    key, equals, value = current.partition("=")
    if equals:
        return _value_words(key, value)
    keys = _key_words(current)
    if current[:1] in ("+", "~"):
        return WORDS, "", keys
    return FILES, "", keys  # or the script


def print_answer(words: List[str]) -> int:
    """``ds-helper --complete-words WORD ...``: prints the answer; never an error, always exit 0 (a Tab)."""
    try:
        mode, prefix, candidates = complete(words)
        print("\n".join([mode, prefix, *candidates]))
    except Exception:  # whatever broke, the user's command line gets no text but words
        pass
    return 0
