"""pytest plugin: the two-node loopback Slurm cluster as a session fixture.

Enable with ``pytest -p slurm_fixture`` (tests/ on sys.path, e.g. via
``pythonpath = ["tests"]``) or ``pytest_plugins = ["slurm_fixture"]`` in
conftest.py. Then::

    def test_two_nodes(slurm_cluster):
        res = subprocess.run(["srun", "-N", "2", "-n", "4", "env"],
                             env=slurm_cluster.env(), capture_output=True, text=True)

The fixture skips only when the ``srun`` binary is absent. If srun is installed
but the cluster does not come up, the test errors (with the daemons' logs).
The cluster is stopped at the end of the session only if this session started
it; a cluster started beforehand (``python tests/slurm/slurm_cluster.py up``, e.g. by
.ci/run) is reused and left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster as _cluster

SLURM_CONF = _cluster.SLURM_CONF


def slurm_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """Env for running srun/sbatch/sinfo against the loopback cluster.

    ``base`` defaults to os.environ; inherited SLURM_*/PMI_*/PMIX_*/PALS_*
    variables are removed, SLURM_CONF is set, then ``extra`` is applied.
    """
    env = _cluster.client_env(base)
    env.update(extra)
    return env


@dataclass
class SlurmCluster:
    conf: Path
    started_here: bool

    def env(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        return slurm_env(base, **extra)

    def srun(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run ``srun *args`` (argv list, never a shell) and capture its output."""
        kw.setdefault("env", self.env())
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["srun", *args], timeout=timeout, check=False, **kw)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not _cluster.have_slurm():
        pytest.skip("srun not installed (apt-get line in tests/slurm/slurm_cluster.py)")
    started = not _cluster.is_up()
    _cluster.start()
    try:
        yield SlurmCluster(conf=Path(os.fspath(SLURM_CONF)), started_here=started)
    finally:
        if started:
            _cluster.stop()
