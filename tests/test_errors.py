"""The catalogue of user mistakes in docs/errors.md, run row by row: each gives exactly its documented message."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml
from conftest import CONF, DS_HELPER, SCRIPTS, assert_user_error, clean_env

CATALOGUE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def option_lists() -> Dict[str, str]:
    """What the catalogue's ``{...}`` placeholders list, read from the option files themselves."""
    launchers = {path.stem: yaml.safe_load(path.read_text()) for path in sorted((CONF / "launcher").glob("*.yaml"))}
    managers = sorted((data for data in launchers.values() if data.get("detect")), key=lambda d: -d.get("priority", 0))
    return {
        "{launcher options}": ", ".join(launchers),
        "{managers by priority}": ", ".join(data["name"] for data in managers),
        "{recipes}": ", ".join(sorted(path.stem for path in RECIPES.glob("*.yaml"))),
    }


def catalogue() -> List[Tuple[str, str, str]]:
    rows = []
    for line in CATALOGUE.read_text().splitlines():
        cells = re.findall(r"\| ([^|`]+?|`[^`]*`) (?=\|)", line)
        if len(cells) == 3 and cells[1].startswith("`"):
            message = cells[2].strip("`")
            for placeholder, options in option_lists().items():
                message = message.replace(placeholder, options)
            rows.append((cells[0], cells[1].strip("`"), message))
    return rows


ROWS = catalogue()


def test_the_catalogue_is_complete_enough_to_mean_something() -> None:
    assert len(ROWS) >= 40


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("errors")
    shutil.copy(SCRIPTS / "show.py", folder)
    (folder / "damaged-plan.json").write_text("{\n")
    (folder / "hosts-option").write_text("node1 slots=2\n-oProxyCommand=x slots=2\n")  # hostfiles as users have them
    (folder / "hosts-digits").write_text("node1 slots=\u0662\n")
    saved = subprocess.run(
        [DS_HELPER, "--save-plan", "plan.json", "show.py"], cwd=folder, env=clean_env(), capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    return folder


@pytest.mark.parametrize(("mistake", "command", "message"), ROWS, ids=[row[0] for row in ROWS])
def test_documented_message(workdir: Path, mistake: str, command: str, message: str) -> None:
    words = shlex.split(command)
    env = clean_env()
    while words[0] != "ds-helper":
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    before = sorted(p.name for p in workdir.iterdir())
    result = subprocess.run(
        [DS_HELPER, *words[1:]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 2, (mistake, result.stderr)
    line = assert_user_error(result)
    pattern = ".*".join(re.escape(part) for part in message.split("…"))
    assert re.fullmatch(pattern, line[len("ds-helper: error: ") :]), (mistake, line)
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing started, nothing written
