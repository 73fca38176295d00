"""ds-helper's import name is its own: a user's folder with ``launcher/``, ``ds_helper/`` or a module named like
one of the standard library's is never imported by ds-helper, whichever way it runs the script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DS_HELPER, SCRIPTS, clean_env, json_lines

# Each one, if imported, leaves a marker file and ends the process: nothing of ds-helper's may import them.
USER_MODULES = ["launcher/__init__.py", "ds_helper/__init__.py", "ds_helper/rank/tee.py", "selectors.py"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    for name in USER_MODULES:
        module = folder / name
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(
            "import pathlib, sys\n"
            f"pathlib.Path({str(folder)!r}, 'IMPORTED-' + {name!r}.replace('/', '.')).touch()\n"
            "sys.exit(97)\n"
        )
    shutil.copy(SCRIPTS / "show.py", folder)
    return folder


@pytest.mark.parametrize(
    "mode", [["log.quiet=true"], ["log.tee=true", "log.dir=logs"], ["run_mode=inprocess"]], ids=lambda m: m[0]
)
def test_a_users_launcher_and_ds_helper_packages_are_never_imported(project: Path, mode: list) -> None:
    result = subprocess.run(
        [DS_HELPER, *mode, "show.py", "--hi"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("IMPORTED-")) == []
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[0]["argv"] == ["--hi"]


def test_the_fixture_would_notice_an_import(project: Path) -> None:
    result = subprocess.run([_installed_python(), "-c", "import ds_helper"], cwd=project, capture_output=True)
    assert result.returncode == 97 and (project / "IMPORTED-ds_helper.__init__.py").exists()


def _installed_python() -> str:
    """The interpreter of the installed console script (its ``#!`` line)."""
    return Path(DS_HELPER).read_text().splitlines()[0].removeprefix("#!").strip()


def test_nothing_called_launcher_is_installed(tmp_path: Path) -> None:
    python = _installed_python()
    found = subprocess.run([python, "-c", "import ds_helper"], cwd=tmp_path, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    missing = subprocess.run([python, "-c", "import launcher"], cwd=tmp_path, capture_output=True, text=True)
    assert "No module named 'launcher'" in missing.stderr
