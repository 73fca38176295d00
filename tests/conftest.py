"""Shared helpers: run the installed ``ds-helper`` for real, alone or under real MPICH and Open MPI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from ds_helper.compose import compose_config
from ds_helper.plan import Plan, make_plan

pytest_plugins = ["slurm_fixture"]

SCRIPTS = Path(__file__).parent / "scripts"
DATA = Path(__file__).parent / "data"
CONF = Path(__file__).resolve().parent.parent / "conf"
DS_HELPER = shutil.which("ds-helper") or "ds-helper"
MPICH = "mpiexec.mpich"
OPENMPI = "mpirun.openmpi"
# Variables of the process managers that may be around the test run itself (a CI job under Slurm, say).
_MANAGER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "SLURM_", "PALS_", "FLUX_", "JSM_", "MV2_", "MPI_LOCAL", "HYDRA_")
_TORCH_NAMES = {
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "GROUP_RANK",
    "NODE_RANK",
    "LOCAL_SIZE",
    "KUBERNETES_SERVICE_HOST",
}


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without any process manager's or torch's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MANAGER_PREFIXES) and k not in _TORCH_NAMES}
    env.update(extra)
    return env


def run(
    argv: List[str],
    *,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[Path] = None,
    timeout: float = 120,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess[str]:
    stdin = None if input is not None else subprocess.DEVNULL  # never the terminal's or pytest's stdin
    return subprocess.run(
        argv,
        env=clean_env() if env is None else env,
        cwd=cwd or SCRIPTS,
        text=True,
        capture_output=True,
        timeout=timeout,
        input=input,
        stdin=stdin,
    )


def ds(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run([DS_HELPER, *args], **kwargs)


def mpich(n: int, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run([MPICH, "-n", str(n), *args], **kwargs)


def openmpi(n: int, *args: str, mpirun_flags: tuple[str, ...] = ("--bind-to", "none"), **kwargs):
    return run([OPENMPI, "--allow-run-as-root", "--oversubscribe", *mpirun_flags, "-n", str(n), *args], **kwargs)


def json_lines(text: str) -> List[dict]:
    """The JSON objects a run printed, one per line, sorted by RANK (or rank) when present."""
    # Managers forward each rank's output in chunks, so two ranks' lines may share a line: find the objects.
    rows = [json.loads(match) for match in re.findall(r"\{[^{}]*\}", text)]
    return sorted(rows, key=lambda r: int(r.get("RANK") or r.get("rank") or 0))


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """One ``ds-helper: error:`` line, a non-zero exit, no traceback, and nothing started."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ds-helper: error: ")]
    assert len(errors) >= 1, result.stderr
    message = errors[0]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert '{"RANK"' not in result.stdout, "the script started"
    return message


@pytest.fixture(autouse=True)
def _ds_helper_installed(request: pytest.FixtureRequest) -> None:
    """A test module that imports DS_HELPER runs the console script; the pure ones need only the package."""
    if "DS_HELPER" in vars(request.module) and shutil.which("ds-helper") is None:
        pytest.fail("ds-helper is not installed: run `pip install .[test]` first (see README)")


@contextmanager
def inside(directory: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def plan_for(*overrides: str) -> Plan:
    """The plan a launch composes from ``script=show.py`` and ``overrides``, in tests/scripts."""
    with inside(SCRIPTS):
        config, candidates = compose_config(["script=show.py", *overrides])
        return make_plan(config, candidates)


def files_reader(files: Dict[str, str]):
    """A ``read_file`` for resolve() that serves ``files`` (path -> text) and nothing else."""

    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return read


def load_recorded(path: Path) -> tuple[dict, List[tuple[Dict[str, str], Dict[str, str]]], object]:
    """A recorded scenario: its ranks' environments (file variables pointing at virtual paths) and expectations."""
    doc = json.loads(path.read_text())
    virtual = {f"/recorded/{name}": text for name, text in doc.get("files", {}).items()}
    ranks = []
    for rank in doc["ranks"]:
        env = {k: (f"/recorded/{v[1:]}" if v.startswith("@") else v) for k, v in rank["env"].items()}
        ranks.append((env, rank["expect"]))
    return doc, ranks, files_reader(virtual)
