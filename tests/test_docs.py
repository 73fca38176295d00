"""The documentation stays true: generated tables are fresh, links lead somewhere, the README stays a guide."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DS_HELPER, run

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def test_the_readme_tables_match_the_files_they_describe() -> None:
    tables = runpy.run_path(str(ROOT / "docs" / "tables.py"))
    text = (ROOT / "README.md").read_text()
    assert tables["render"](text) == text, "README.md is stale: run python docs/tables.py"


def test_the_readme_is_a_user_guide_not_a_manual() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 16 * 1024, f"README.md is {size} bytes: move detail to docs/ (design.md, errors.md, recipes.md)"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_of_the_repository(page: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert missing == [], missing


def _set_up_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [line.strip().split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]


def test_the_readme_set_up_is_two_commands_and_ci_runs_the_second() -> None:
    install_and_launch, suite = _set_up_commands()
    assert install_and_launch.startswith("bash .ci/install && ds-helper ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "bash .ci/install" in ci and ci[-1] == suite


def test_the_readme_example_launch_starts_its_ranks() -> None:
    launch = shlex.split(_set_up_commands()[0].split("&&", 1)[1])
    assert launch[0] == "ds-helper"
    result = run([DS_HELPER, *launch[1:]], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    ranks = sorted(json.loads(line)["RANK"] for line in result.stdout.splitlines())
    assert ranks == [str(rank) for rank in range(len(ranks))] and len(ranks) >= 2


def _install_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Install\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip().split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]


def test_the_readme_user_install_is_one_pip_line_that_gives_a_working_ds_helper(tmp_path: Path) -> None:
    # A user's machine: a fresh venv with nothing of the suite's, the README's line run as written, from a clone.
    (install,) = _install_commands()
    assert install == "pip install ."
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = shlex.split(install)
    installed = subprocess.run(
        [str(venv / "bin" / pip[0]), *pip[1:], "-q"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr
    result = run([str(venv / "bin" / "ds-helper"), "job.ranks=2", "tests/scripts/show.py"], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(line)["RANK"] for line in result.stdout.splitlines()) == ["0", "1"]
