"""Shared helpers: run the installed ``ds-helper`` for real, alone or under real MPICH and Open MPI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from ds_helper.compose.config import compose_config
from ds_helper.compose.planner import make_plan
from ds_helper.compose.schema import RANK_FIELDS, BindSpec, ExportSpec
from ds_helper.rank import plan as records
from ds_helper.rank.plan import Plan
from hypothesis import settings

# Under CI=true (as .ci/run is run in CI) hypothesis replays the same examples every run, so a landing is
# never decided by a lucky draw; a developer's run draws new ones each time and keeps failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

sys.path.insert(0, str(Path(__file__).parent / "slurm"))  # the loopback Slurm cluster's helpers (tests/slurm/)
pytest_plugins = ["slurm_fixture"]

SCRIPTS = Path(__file__).parent / "scripts"
DATA = Path(__file__).parent / "data"
CONF = Path(__file__).resolve().parent.parent / "conf"
DS_HELPER = shutil.which("ds-helper") or "ds-helper"
MPICH = "mpiexec.mpich"
OPENMPI = "mpirun.openmpi"


def _manager_variables() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(prefixes, one-word names) of every variable a shipped launcher file reads or ds-helper exports.

    ``SLURM_PROCID`` stands for every ``SLURM_*``: a test's environment holds no process manager's variables,
    even when the suite itself runs inside a job. Derived from conf/launcher/*.yaml and the schema, so a new
    manager's file needs no edit here.
    """
    names = {name for names in asdict(ExportSpec()).values() for name in names}
    for path in (CONF / "launcher").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for key in ("detect", "exclude", "evidence", "job_id", *RANK_FIELDS):
            for source in data.get(key, []):
                names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
        names.update(host["var"] for host in data.get("hosts", []))
    prefixes = {name.split("_", 1)[0] + "_" for name in names if "_" in name}
    return tuple(sorted(prefixes)), tuple(sorted(name for name in names if "_" not in name))


_MANAGER_PREFIXES, _MANAGER_NAMES = _manager_variables()
_OWN_SETTINGS = "DS_HELPER_"  # DS_HELPER_DEBUG, DS_HELPER_RECIPE_PATH, DS_HELPER_LAUNCHER_PATH


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without any process manager's, torch's or ds-helper's variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((*_MANAGER_PREFIXES, _OWN_SETTINGS)) and k not in _MANAGER_NAMES
    }
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


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch folder holding a copy of tests/scripts/show.py, for runs whose files must stay apart."""
    shutil.copy(SCRIPTS / "show.py", tmp_path)
    return tmp_path


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


def bind_record(**settings: object) -> records.BindSpec:
    """The plan's bind record (what binding reads on a rank) of these settings, the schema's defaults for the rest."""
    return records.BindSpec(**asdict(BindSpec(**settings)))  # type: ignore[arg-type]


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


def start_watched(
    argv: List[str], env: Optional[Dict[str, str]] = None, new_session: bool = False
) -> subprocess.Popen[str]:
    """Start ``argv`` in tests/scripts with stdout and stderr merged into one pipe, for :func:`wait_for`
    (``new_session``: in a session of its own, so that a signal reaches it alone)."""
    return subprocess.Popen(
        argv,
        cwd=SCRIPTS,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=new_session,
    )


def wait_for(proc: subprocess.Popen[str], word: str, count: int, timeout: float = 120) -> str:
    """Read the output until ``word`` appeared ``count`` times (ranks may share a line)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while seen.count(word) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert seen.count(word) >= count, seen
    return seen


def alive_with(token: str) -> List[int]:
    """Pids of the processes whose command line holds ``token`` (a uuid a test put there)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                continue
    return found


def gone_after_kill_9(proc: subprocess.Popen, token: str, timeout: float = 20) -> List[int]:
    """SIGKILL ``proc``, wait up to ``timeout`` for everything marked with ``token`` to end; the pids left (killed
    too, so a failing test leaves nothing to the next one)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + timeout
    while alive_with(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive_with(token)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left
