"""Real ranks under the real MPICH (mpiexec.mpich) and Open MPI (mpirun.openmpi) of this machine."""

from __future__ import annotations

import pytest
from conftest import DS_HELPER, json_lines, mpich, openmpi

pytestmark = pytest.mark.mpi

MANAGERS = {"mpich": mpich, "openmpi": openmpi}


@pytest.mark.parametrize("manager", MANAGERS)
@pytest.mark.parametrize("launcher", ["auto", "explicit"])
def test_two_ranks_see_their_ranks_and_the_users_arguments(manager: str, launcher: str) -> None:
    choice = [f"launcher={manager}"] if launcher == "explicit" else []
    result = MANAGERS[manager](2, DS_HELPER, *choice, "script=show.py", "--", "--lr", "3e-4")
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"], r["NODE_RANK"]) for r in rows] == [
        ("0", "0", "2", "2", "0"),
        ("1", "1", "2", "2", "0"),
    ]
    assert all(r["argv"] == ["--lr", "3e-4"] and r["MASTER_ADDR"] == "127.0.0.1" for r in rows)
    assert rows[0]["MASTER_PORT"] == rows[1]["MASTER_PORT"]
    # The command is logged once, by rank 0.
    assert result.stderr.count(f"launcher={manager}:") == 1, result.stderr


@pytest.mark.parametrize("manager", MANAGERS)
def test_module_mode_under_mpi(manager: str) -> None:
    result = MANAGERS[manager](2, DS_HELPER, "module=true", "script=pkg.hello", "--", "z")
    rows = json_lines(result.stdout)
    assert [(r["module"], r["argv"], r["RANK"]) for r in rows] == [("__main__", ["z"], "0"), ("__main__", ["z"], "1")]


def test_deepspeed_mpich_runner_command_line_works_with_ds_helper_in_place_of_launcher_helper() -> None:
    # DeepSpeed's MPICHRunner: mpirun ... -genv WORLD_SIZE .. -genv LOCAL_SIZE .. <helper> --launcher mpich script args
    result = mpich(
        2,
        "-genv",
        "MASTER_ADDR",
        "127.0.0.1",
        "-genv",
        "MASTER_PORT",
        "29611",
        "-genv",
        "WORLD_SIZE",
        "2",
        "-genv",
        "LOCAL_SIZE",
        "2",
        DS_HELPER,
        "--launcher",
        "mpich",
        "show.py",
        "--deepspeed",
        "--bind_core_list",
        "9",
    )
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["LOCAL_RANK"], r["MASTER_PORT"]) for r in rows] == [("0", "0", "29611"), ("1", "1", "29611")]
    assert rows[0]["argv"] == ["--deepspeed", "--bind_core_list", "9"]
    module = mpich(2, DS_HELPER, "--launcher", "mpich", "--module", "pkg.hello", "a")
    assert [r["argv"] for r in json_lines(module.stdout)] == [["a"], ["a"]]


@pytest.mark.parametrize("manager", MANAGERS)
def test_exit_code_3_of_a_rank_comes_out_of_the_manager(manager: str) -> None:
    result = MANAGERS[manager](2, DS_HELPER, "exit_with.py", "3")
    assert result.returncode == 3, (result.returncode, result.stderr[-500:])


@pytest.mark.parametrize("manager", MANAGERS)
def test_user_error_on_every_rank_fails_the_job_with_one_line_each(manager: str) -> None:
    result = MANAGERS[manager](2, DS_HELPER, "launcher=mvapich", "show.py")
    assert result.returncode != 0
    assert result.stderr.count("ds-helper: error: launcher=mvapich: rank not found") == 2
    assert "Traceback" not in result.stderr and json_lines(result.stdout) == []


@pytest.mark.torch
@pytest.mark.parametrize("manager", MANAGERS)
def test_torch_gloo_all_reduce_across_two_ranks_with_no_extra_settings(manager: str) -> None:
    pytest.importorskip("torch", reason="torch==2.13.0 is installed by .ci/run")
    result = MANAGERS[manager](2, DS_HELPER, "gloo_allreduce.py", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json_lines(result.stdout)
    assert [(r["rank"], r["world"], r["sum"], r["local_rank"]) for r in rows] == [(0, 2, 3.0, 0), (1, 2, 3.0, 1)]
