"""The pure middle: one rank's launch from a plan and an environment (recorded from real managers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA, load_recorded, plan_for
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.load import plan_from_json
from ds_helper.rank.plan import Plan, plan_to_json
from ds_helper.rank.resolve import resolve

EXPORTED = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR"]
ENV_FILES = sorted((DATA / "env").glob("*.json"))


@pytest.fixture(scope="module")
def auto_plan() -> Plan:
    return plan_for()


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.stem for p in ENV_FILES])
def test_recorded_environment_maps_as_the_manager_means(auto_plan: Plan, path: Path) -> None:
    doc, ranks, reader = load_recorded(path)
    for env, expect in ranks:
        launch = resolve(auto_plan, env, [], read_file=reader)
        assert launch.launcher == doc["expect_launcher"], (path.name, launch.why)
        got = {name: launch.env.get(name) for name in EXPORTED}
        # A value already in the manager's environment (torchrun, Kubeflow) is kept as it is.
        assert got == {name: expect.get(name) for name in EXPORTED}, path.name


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.stem for p in ENV_FILES])
def test_recorded_environment_with_explicit_launcher_agrees(path: Path) -> None:
    doc, ranks, reader = load_recorded(path)
    plan = plan_for(f"launcher={doc['expect_launcher']}")
    for env, expect in ranks:
        launch = resolve(plan, env, [], read_file=reader)
        assert launch.env.get("RANK") == expect["RANK"]
        assert launch.env.get("LOCAL_RANK") == expect["LOCAL_RANK"]


MPICH_RANK1 = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "PMI_FD": "8"}


def test_every_rank_variable_and_its_aliases_are_exported(auto_plan: Plan) -> None:
    launch = resolve(auto_plan, MPICH_RANK1, [])
    assert launch.launcher == "mpich"
    for name, value in [
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("LOCAL_SIZE", "2"),
        ("NODE_RANK", "0"),
        ("GROUP_RANK", "0"),
        ("MASTER_PORT", "29500"),
    ]:
        assert launch.env[name] == value, name
    assert launch.env["PMI_FD"] == "8"  # the manager's own variables stay
    assert launch.ranks.sources["rank"] == "PMI_RANK=1"


def test_an_outer_jobs_number_the_manager_does_not_give_is_unset(auto_plan: Plan) -> None:
    # Two nodes under MPICH: no node rank from the manager; a NODE_RANK and LOCAL_WORLD_SIZE left over from an
    # outer job (a pod, an sbatch script) must not reach the script as if they were this rank's.
    env = {"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "NODE_RANK": "0", "GROUP_RANK": "5"}
    launch = resolve(auto_plan, env, [])
    for name in ("NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        assert name not in launch.env, name
    why = {change.name: change.why for change in launch.changes if change.value is None}
    assert why["NODE_RANK"] == "node_rank not given by launcher=mpich"


def test_sources_that_disagree_name_both(auto_plan: Plan) -> None:
    with pytest.raises(LaunchError, match=r"rank: PMIX_RANK=0 disagrees with PMI_RANK=1"):
        resolve(auto_plan, {**MPICH_RANK1, "PMIX_RANK": "0"}, [])


def test_sources_that_agree_in_value_but_not_in_spelling_are_fine(auto_plan: Plan) -> None:
    assert resolve(auto_plan, {**MPICH_RANK1, "PMIX_RANK": "01"}, []).env["RANK"] == "1"


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.0", " ", "１", "99999999999999999999"])
def test_values_that_are_not_counts_are_refused_by_name(auto_plan: Plan, bad: str) -> None:
    with pytest.raises(LaunchError, match=r"PMI_RANK="):
        resolve(auto_plan, {**MPICH_RANK1, "PMI_RANK": bad}, [])


def test_rank_not_below_world_size(auto_plan: Plan) -> None:
    with pytest.raises(LaunchError, match=r"rank 2 \(PMI_RANK=2\) is not below world_size 2 \(PMI_SIZE=2\)"):
        resolve(auto_plan, {**MPICH_RANK1, "PMI_RANK": "2"}, [])


def test_local_rank_not_below_local_world_size(auto_plan: Plan) -> None:
    with pytest.raises(LaunchError, match=r"local_rank 3 .* local_world_size 2"):
        resolve(auto_plan, {**MPICH_RANK1, "MPI_LOCALRANKID": "3"}, [])


def test_explicit_launcher_without_its_variables_names_what_it_looked_for_and_what_is_there() -> None:
    plan = plan_for("launcher=openmpi")
    with pytest.raises(LaunchError) as info:
        resolve(plan, MPICH_RANK1, [])
    message = str(info.value)
    assert "launcher=openmpi: rank not found (looked for OMPI_COMM_WORLD_RANK, PMIX_RANK)" in message
    assert "MPI_LOCALRANKID" in message and "PMI_RANK" in message


def test_standalone_run_is_rank_0_of_1(auto_plan: Plan) -> None:
    launch = resolve(auto_plan, {"PATH": "/bin"}, [])
    assert launch.launcher == "local"
    assert [launch.env[n] for n in ["RANK", "WORLD_SIZE", "MASTER_ADDR"]] == ["0", "1", "127.0.0.1"]


def test_rank_variable_of_an_unknown_manager_is_an_error_not_rank_0(auto_plan: Plan) -> None:
    # PMI_RANK alone: set by five managers, none of whose signatures is present.
    with pytest.raises(LaunchError, match=r"no process manager recognised .*PMI_RANK=3"):
        resolve(auto_plan, {"PMI_RANK": "3", "PMI_SIZE": "4"}, [])


def test_master_addr_and_port_from_the_environment_are_kept(auto_plan: Plan) -> None:
    env = {**MPICH_RANK1, "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "1234"}
    launch = resolve(auto_plan, env, [])
    assert (launch.env["MASTER_ADDR"], launch.env["MASTER_PORT"]) == ("10.1.2.3", "1234")
    assert not [c for c in launch.changes if c.name.startswith("MASTER_")]


def test_master_from_config() -> None:
    launch = resolve(plan_for("master.addr=head-node", "master.port=4242"), MPICH_RANK1, [])
    assert (launch.env["MASTER_ADDR"], launch.env["MASTER_PORT"]) == ("head-node", "4242")


SLURM_MULTI = {
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "2",
    "SLURM_STEP_NUM_TASKS": "7",
    "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
    "SLURM_STEP_NODELIST": "gpu-a[07-09],gpu-b1",
    "SLURM_JOB_ID": "123456",
}


def test_slurm_local_world_size_from_the_compressed_count_list_and_first_host(auto_plan: Plan) -> None:
    launch = resolve(auto_plan, SLURM_MULTI, [])
    assert launch.launcher == "slurm"
    assert launch.env["LOCAL_WORLD_SIZE"] == "2" and launch.env["NODE_RANK"] == "2"
    assert launch.env["MASTER_ADDR"] == "gpu-a07"
    assert launch.env["MASTER_PORT"] == str(20000 + 123456 % 10000)
    last_node = {**SLURM_MULTI, "SLURM_PROCID": "6", "SLURM_LOCALID": "0", "SLURM_NODEID": "3"}
    assert resolve(auto_plan, last_node, []).env["LOCAL_WORLD_SIZE"] == "1"


def test_job_ids_that_are_not_numbers_still_give_one_port_per_job(auto_plan: Plan) -> None:
    flux = {"FLUX_TASK_RANK": "0", "FLUX_TASK_LOCAL_ID": "0", "FLUX_JOB_SIZE": "2", "FLUX_JOB_ID": "ƒ2Ux8zv1"}
    port = int(resolve(auto_plan, flux, []).env["MASTER_PORT"])
    assert 20000 <= port < 30000
    assert resolve(auto_plan, {**flux, "FLUX_TASK_RANK": "1"}, []).env["MASTER_PORT"] == str(port)


def test_multi_node_without_a_host_list_leaves_master_addr_unset_and_says_so_on_rank_0(auto_plan: Plan) -> None:
    env = {
        "OMPI_COMM_WORLD_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    }
    launch = resolve(auto_plan, env, [])
    assert "MASTER_ADDR" not in launch.env
    assert any("MASTER_ADDR not set" in note for note in launch.notes)
    other = resolve(auto_plan, {**env, "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, [])
    assert other.notes == []


def test_host_file_that_cannot_be_read_is_named() -> None:
    plan = plan_for("launcher=pals")
    env = {
        "PALS_RANKID": "0",
        "PALS_LOCAL_RANKID": "0",
        "PMI_SIZE": "4",
        "PMI_LOCAL_SIZE": "2",
        "PBS_NODEFILE": "/nonexistent/nodes",
    }
    with pytest.raises(LaunchError, match=r"PBS_NODEFILE=/nonexistent/nodes: cannot read the host file"):
        resolve(plan, env, [])


HOSTILE = ["a b", 'it\'s "quoted"', "$(touch /tmp/pwned)", "`id`", "x=y=z", "line1\nline2", "tab\tand\\back", "ünï"]


@pytest.mark.parametrize("value", HOSTILE)
def test_env_values_pass_byte_for_byte(value: str) -> None:
    plan = plan_for()
    plan.env = {"FOO": value, "GONE": None}
    launch = resolve(plan, {"GONE": "x", "KEEP": value}, [])
    assert launch.env["FOO"] == value and launch.env["KEEP"] == value
    assert "GONE" not in launch.env


def test_config_args_come_first_then_the_command_line_ones() -> None:
    plan = plan_for("args=[--epochs,'2']")
    launch = resolve(plan, {}, ["--lr", "3e-4"])
    assert launch.argv[-4:] == ["--epochs", "2", "--lr", "3e-4"]
    assert launch.argv[1:3] == ["-u", "show.py"]


def test_plan_survives_json_and_resolves_the_same(auto_plan: Plan) -> None:
    again = plan_from_json(plan_to_json(auto_plan))
    assert again == auto_plan
    for env in (MPICH_RANK1, SLURM_MULTI, {}):
        assert resolve(again, env, ["x"]) == resolve(auto_plan, env, ["x"])


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": 99, "plan": {}}', '{"format": 1, "plan": {"x": 1}}'])
def test_damaged_plans_are_refused_clearly(text: str) -> None:
    with pytest.raises(LaunchError, match=r"plan"):
        plan_from_json(text)
