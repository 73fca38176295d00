"""Checks of the loopback Slurm fixture and of the recorded Slurm env files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurm_record_env import expand_counts, expect_step, first_host

ENV_DIR = Path(__file__).resolve().parent / "data" / "env"


@pytest.mark.slurm
def test_two_node_step(slurm_cluster):
    res = slurm_cluster.srun(
        "-N",
        "2",
        "-n",
        "4",
        "printenv",
        "SLURM_PROCID",
        "SLURM_NODEID",
        "SLURM_STEP_NODELIST",
        "SLURM_STEP_TASKS_PER_NODE",
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines.count("node[1-2]") == 4
    assert lines.count("2(x2)") == 4


@pytest.mark.slurm
def test_srun_exit_code(slurm_cluster):
    res = slurm_cluster.srun("-N", "1", "-n", "1", "python3", "-c", "raise SystemExit(3)")
    assert res.returncode == 3


def test_helpers():
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert expand_counts("4") == [4]
    assert first_host("node[1-2]") == "node1"
    assert first_host("gpu[007-009,011],cpu1") == "gpu007"
    assert first_host("a,b") == "a"
    assert first_host("n1") == "n1"


RECORDED_HERE = ["slurm-2node.json", "slurm-pmi2.json", "slurm-cray-shasta.json", "slurm-sbatch-no-step.json"]


@pytest.mark.parametrize("name", RECORDED_HERE)
def test_recorded_files_consistent(name):
    doc = json.loads((ENV_DIR / name).read_text())
    assert doc["manager"] == "slurm"
    assert doc["ranks"]
    if doc["expect_launcher"] == "slurm":
        world = {r["expect"]["WORLD_SIZE"] for r in doc["ranks"]}
        assert world == {str(len(doc["ranks"]))}
        for r in doc["ranks"]:
            assert r["expect"] == expect_step(r["env"])
    else:
        (rank,) = doc["ranks"]
        assert "SLURM_STEP_ID" not in rank["env"]
        assert rank["expect"]["NODE_RANK"] == "0"  # a standalone run is node 0
