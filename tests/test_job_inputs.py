"""Job inputs as users bring them: hostfiles of every common form, keys that need a manager, plans near the size
limit of one environment variable, checks done once by the process that starts the job, and commands shown by
the dry run and the saved-plan hint that work when pasted. Black-box, through the ``ds-helper`` command: local
jobs, and real MPICH on two "nodes" through Hydra's ssh launcher pointed at tests/scripts/ssh_standin.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import List

import pytest
from conftest import DS_HELPER, MPICH, SCRIPTS, assert_user_error, clean_env, ds, json_lines

MPICH_JOB = ["launcher=mpich", f"job.program={MPICH}"]
SSH_STANDIN = f"job.manager_args=[-launcher,ssh,-launcher-exec,{SCRIPTS / 'ssh_standin.py'}]"
LINUX_STRING_LIMIT = 128 * 1024  # MAX_ARG_STRLEN: one argument or one NAME=value of the environment


@pytest.fixture
def node_names() -> None:
    """node1 and node2 resolve to this machine (the Slurm cluster's set-up adds them to /etc/hosts)."""
    import slurm_cluster

    slurm_cluster._ensure_hosts()


def _layout(result: subprocess.CompletedProcess[str]) -> List[tuple[str, ...]]:
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        (r["RANK"], r["LOCAL_RANK"], r["NODE_RANK"], r["LOCAL_WORLD_SIZE"], r["WORLD_SIZE"], r["MASTER_ADDR"])
        for r in json_lines(result.stdout)
    ]


def _hostfile(tmp_path: Path, data: bytes | str) -> str:
    path = tmp_path / "hosts"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return f"job.hostfile={path}"


# --- hostfiles -------------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_a_hostfile_with_bom_crlf_comments_and_mpich_and_openmpi_lines_starts_two_mpich_nodes(
    node_names: None, tmp_path: Path
) -> None:
    text = "\ufeff# our two nodes\r\nnode1:2   # MPICH's form\r\n\r\nnode2 slots=2 max_slots=4\r\n"
    result = ds(*MPICH_JOB, SSH_STANDIN, _hostfile(tmp_path, text), "show.py", timeout=180)
    assert _layout(result) == [(str(r), str(r % 2), str(r // 2), "2", "4", "node1") for r in range(4)]


@pytest.mark.parametrize(
    "text",
    [
        "node1:2\nnode2:2\n",
        "node1 slots=2\nnode2 slots=2\n",
        "node1 slots=2 max_slots=2\nnode2 slots=2 max-slots=8\n",
        "\ufeffnode1 slots=2\r\nnode2 slots=2\r\n",
        "# a comment line\n  node1:2  # trailing comment\n\nnode2:2\n",
    ],
    ids=["mpich", "deepspeed", "openmpi-max-slots", "bom-crlf", "comments"],
)
def test_every_common_hostfile_form_gives_the_same_job(tmp_path: Path, text: str) -> None:
    result = ds(*MPICH_JOB, _hostfile(tmp_path, text), "--dry-run", "show.py")
    assert result.returncode == 0, result.stderr
    assert "-n 4 -ppn 2 -hosts node1,node2 " in result.stdout
    assert re.search(r"^\s+3\s+1\s+node2\s+1$", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("node1 slots=\u00b2\n", "slots=\u00b2"),  # a superscript two: a digit to str.isdigit, not to us
        ("node1 slots=\u0662\n", "slots=\u0662"),  # an Arabic-Indic two
        ("node1:\u0662\n", "node1:\u0662"),
        ("node1 slots=0\n", "slots=0"),
        ("node1 slots=" + "9" * 5000 + "\n", "slots=999"),  # past int()'s digit limit: still one line
        ("node1 slots=4 max_slots=2\n", "max_slots=2 is below slots=4"),
        ("node1:2 slots=2\n", "slots=2"),
        ("node1 cpus=2\n", "cpus=2"),
        ("-oProxyCommand=touch\n", "'-oProxyCommand=touch'"),
        ("a,b slots=1\n", "'a,b'"),
        ("::1 slots=1\n", "IPv6"),
        ("fe80::1%eth0\n", "IPv6"),
        ("[::1]:2\n", "IPv6"),
        ("node\u00e9 slots=1\n", "'node\u00e9'"),
        ("# only a comment\n", "no hosts"),
        ("node1\nnode1\n", "listed twice"),
    ],
)
def test_a_hostfile_mistake_is_one_error_naming_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    hostfile = _hostfile(tmp_path, text)
    message = assert_user_error(ds(*MPICH_JOB, hostfile, "--dry-run", "show.py"), fragment)
    assert hostfile in message


def test_hostfile_entries_and_job_hosts_follow_one_rule_for_host_names(tmp_path: Path) -> None:
    for name in ("-oProxyCommand=x", "a,b", "::1", "a@b"):
        from_file = assert_user_error(ds(*MPICH_JOB, _hostfile(tmp_path, f"{name}\n"), "--dry-run", "show.py"))
        listed = assert_user_error(ds(*MPICH_JOB, f"job.hosts=['{name}']", "--dry-run", "show.py"))
        assert from_file.partition(repr(name))[2] == listed.partition(repr(name))[2] != "", (from_file, listed)


def test_a_hostfile_over_the_size_limit_is_refused_not_cut(tmp_path: Path) -> None:
    text = "".join(f"node{n} slots=1\n" for n in range(100_000))  # about 1.4 MB
    assert_user_error(ds(*MPICH_JOB, _hostfile(tmp_path, text), "--dry-run", "show.py"), "larger than")


def test_a_hostfile_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    assert_user_error(ds(*MPICH_JOB, _hostfile(tmp_path, b"node\xff\n"), "--dry-run", "show.py"), "not UTF-8")


# --- keys that need a manager ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        ["job.ranks=2", "job.hosts=[remotebox]"],
        ["job.ranks=2", "HOSTFILE"],
        ["job.ranks=2", "job.program=mpiexec.hydra"],
        ["job.ranks=2", "job.manager_args=[-v]"],
        ["job.program=mpiexec.hydra"],
        ["job.manager_args=[-v]"],
        ["job.nodes=2", "job.ranks=4"],
        ["launcher=local", "job.ranks=2", "job.hosts=[remotebox]"],
    ],
)
def test_keys_that_need_a_manager_are_one_error_without_one(tmp_path: Path, keys: List[str]) -> None:
    keys = [_hostfile(tmp_path, "remotebox slots=2\n") if key == "HOSTFILE" else key for key in keys]
    message = assert_user_error(ds(*keys, "show.py"), "a process manager", "launcher=")
    named = [key.split("=", 1)[0] for key in keys if key.split("=", 1)[0] not in ("job.ranks", "launcher")]
    assert all(name in message for name in named), message


def test_a_local_job_has_an_upper_bound_on_its_ranks_with_the_reason(tmp_path: Path) -> None:
    assert_user_error(ds("job.ranks=100000", "show.py"), "job.ranks=100000", "on this machine")
    hostfile = _hostfile(tmp_path, "localhost slots=100000\n")
    assert_user_error(ds("launcher=local", hostfile, "show.py"), "needs a process manager")


# --- plans that fit their variable -----------------------------------------------------------------------------


def test_a_long_non_ascii_argument_that_runs_standalone_runs_in_a_job(tmp_path: Path) -> None:
    text = "\u00e9t\u00e9 \u6f22\u5b57 " * 7000  # about 75 KB as UTF-8, 250 KB as \\u escapes
    assert len(text.encode()) > 70_000
    probe = tmp_path / "digest.py"  # a digest, not 75 KB lines that two ranks' writes could interleave
    probe.write_text(
        "import hashlib, json, os, sys\n"
        "digest = hashlib.sha256(os.fsencode(sys.argv[1])).hexdigest()\n"
        "print(json.dumps({'RANK': os.environ.get('RANK', '0'), 'digest': digest}), flush=True)\n"
    )
    expected = hashlib.sha256(text.encode()).hexdigest()
    alone = ds(str(probe), text)
    assert [row["digest"] for row in json_lines(alone.stdout)] == [expected], alone.stderr[-2000:]
    job = ds("job.ranks=2", str(probe), text)
    assert [row["digest"] for row in json_lines(job.stdout)] == [expected] * 2, job.stderr[-2000:]


def test_bytes_that_are_not_utf8_reach_every_rank_exactly(tmp_path: Path) -> None:
    raw = b"caf\xe9 \xff\xfe-\xed\xa0\x80"  # Latin-1, stray bytes, an encoded surrogate
    probe = tmp_path / "raw.py"
    probe.write_text(
        "import os, sys\n"
        "got = os.fsencode(sys.argv[1]).hex(), os.fsencode(os.environ['RAW_ENV']).hex()\n"
        "sys.stdout.write(' '.join(got) + '\\n')\n"  # one write: the ranks run with python -u
    )
    env = {os.fsencode(name): os.fsencode(value) for name, value in clean_env().items()}
    env[b"RAW_ENV"] = raw
    for job in ([], [b"job.ranks=2"]):
        argv = [os.fsencode(DS_HELPER), *job, os.fsencode(probe), raw]
        result = subprocess.run(argv, env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr[-2000:]
        lines = result.stdout.decode().splitlines()
        assert lines == [f"{raw.hex()} {raw.hex()}"] * max(1, len(job) * 2), lines


def test_a_plan_over_the_limit_is_one_error_naming_the_variable_its_size_and_the_limit() -> None:
    big = ["x" * 70_000, "y" * 70_000]  # each fits in an argument of ds-helper; together not in the plan
    message = assert_user_error(ds("job.ranks=2", "show.py", *big), "DS_HELPER_PLAN", str(LINUX_STRING_LIMIT))
    size = int(re.search(r"(\d+) bytes", message).group(1))  # type: ignore[union-attr]
    assert size > LINUX_STRING_LIMIT
    assert_user_error(ds(*MPICH_JOB, "job.ranks=2", "show.py", *big), "DS_HELPER_PLAN")


def test_thousands_of_env_entries_fit_in_a_job(tmp_path: Path) -> None:
    entries = [f"env.VAR_{n}=value{n}" for n in range(3000)]
    result = ds("job.ranks=2", *entries, "show.py", env=clean_env(SHOW_ALSO="VAR_2999"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["VAR_2999"] for row in json_lines(result.stdout)] == ["value2999"] * 2


def test_the_dry_run_shows_the_plans_size_and_the_limit() -> None:
    result = ds("job.ranks=2", "--dry-run", "show.py")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"the plan \(\d+ bytes of {LINUX_STRING_LIMIT} allowed\)", result.stdout), result.stdout


# --- checked once, when the job starts -------------------------------------------------------------------------


@pytest.mark.mpi
def test_a_log_name_every_rank_would_share_is_one_error_before_any_rank_starts(tmp_path: Path) -> None:
    result = ds(*MPICH_JOB, "job.ranks=8", f"log.dir={tmp_path / 'logs'}", "log.out=out.txt", "show.py")
    assert_user_error(result, "log.out='out.txt'")
    assert result.stderr.count("ds-helper: error:") == 1, result.stderr
    assert not (tmp_path / "logs").exists()


def test_a_dry_run_for_other_nodes_does_not_judge_their_binding_by_this_machine() -> None:
    result = ds(*MPICH_JOB, "job.hosts=[node1,node2]", "job.ranks=8", "bind=cores", "--dry-run", "show.py")
    assert result.returncode == 0, result.stderr
    assert "not checked here" in result.stdout, result.stdout


def test_a_binding_that_cannot_work_here_is_refused_before_any_local_rank_starts() -> None:
    cpus = len(os.sched_getaffinity(0))
    result = ds(f"job.ranks={cpus + 1}", "bind=cores", "show.py")
    assert_user_error(result)
    assert result.stderr.count("ds-helper: error:") == 1, result.stderr


# --- commands shown are commands that work ---------------------------------------------------------------------


def _pasted(line: str, cwd: Path = SCRIPTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line],
        env=clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _shown_command(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("command: ")]
    assert len(lines) == 1, stdout
    return lines[0][len("command: ") :]


@pytest.mark.mpi
def test_the_job_dry_runs_command_starts_the_job_when_pasted(node_names: None) -> None:
    shape = [*MPICH_JOB, SSH_STANDIN, "job.hosts=[node1,node2]", "job.ranks=4", "show.py", "--lr", "1"]
    dry = ds("--dry-run", *shape)
    assert dry.returncode == 0, dry.stderr
    pasted = _pasted(_shown_command(dry.stdout))
    assert _layout(pasted) == [(str(r), str(r % 2), str(r // 2), "2", "4", "node1") for r in range(4)]
    assert all(row["argv"] == ["--lr", "1"] for row in json_lines(pasted.stdout))


def test_a_local_job_dry_runs_command_runs_a_rank_when_pasted() -> None:
    dry = ds("job.ranks=2", "--dry-run", "show.py", "--lr", "1")
    assert dry.returncode == 0, dry.stderr
    rows = json_lines(_pasted(_shown_command(dry.stdout)).stdout)
    assert [(r["RANK"], r["WORLD_SIZE"], r["argv"]) for r in rows] == [("0", "2", ["--lr", "1"])]


def _hint(stderr: str) -> str:
    found = re.search(r"start (?:it|each rank) with: (.+)$", stderr, re.MULTILINE)
    assert found, stderr
    return found.group(1)


@pytest.mark.mpi
@pytest.mark.parametrize("launcher", [[], MPICH_JOB])
def test_the_saved_plan_hint_of_a_job_starts_that_job(tmp_path: Path, launcher: List[str]) -> None:
    plan = tmp_path / "p.json"
    saved = ds(*launcher, "job.ranks=2", "--save-plan", str(plan), str(SCRIPTS / "show.py"), "--lr", "1")
    assert saved.returncode == 0, saved.stderr
    hint = _hint(saved.stderr)
    if not launcher:  # no manager: the hint names one that starts the two ranks
        hint = hint.replace("mpiexec ", f"{MPICH} ", 1)
    rows = json_lines(_pasted(hint, cwd=tmp_path).stdout)
    assert [(r["RANK"], r["WORLD_SIZE"], r["argv"]) for r in rows] == [(str(r), "2", ["--lr", "1"]) for r in range(2)]


def test_the_saved_plan_hint_of_a_single_process_is_unchanged(tmp_path: Path) -> None:
    saved = ds("--save-plan", str(tmp_path / "p.json"), "show.py")
    assert saved.returncode == 0, saved.stderr
    assert _hint(saved.stderr) == f"ds-helper --plan {tmp_path / 'p.json'}"


# --- OMP_NUM_THREADS in jobs that do not bind ------------------------------------------------------------------


def test_a_job_without_binding_gives_each_rank_its_share_of_cpus_as_omp_threads() -> None:
    result = ds("job.ranks=2", "show.py")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [row["OMP_NUM_THREADS"] for row in json_lines(result.stdout)] == [str(share)] * 2
    assert len([line for line in result.stderr.splitlines() if "OMP_NUM_THREADS" in line]) == 1, result.stderr


@pytest.mark.parametrize(
    ("how", "threads"),
    [
        ({"OMP_NUM_THREADS": "3"}, "3"),
        (["env.OMP_NUM_THREADS=3"], "3"),
        (["~env.OMP_NUM_THREADS"], None),
        (["bind=none"], None),  # bind=none: OMP_NUM_THREADS as the manager left it (unset here)
        (["bind.omp_threads=false"], None),
    ],
    ids=["environment", "env-override", "unset", "bind-none", "omp-threads-off"],
)
def test_the_users_omp_num_threads_is_never_overridden(how: dict | list, threads: str | None) -> None:
    if isinstance(how, dict):
        result = ds("job.ranks=2", "show.py", env=clean_env(**how))
    else:
        result = ds("job.ranks=2", *how, "show.py")
    assert result.returncode == 0, result.stderr
    assert [row["OMP_NUM_THREADS"] for row in json_lines(result.stdout)] == [threads, threads]
    assert "OMP_NUM_THREADS" not in result.stderr


@pytest.mark.mpi
def test_a_manager_job_gives_each_rank_its_share_and_says_so_once() -> None:
    result = ds(*MPICH_JOB, "job.ranks=2", "show.py")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [row["OMP_NUM_THREADS"] for row in json_lines(result.stdout)] == [str(share)] * 2
    assert len([line for line in result.stderr.splitlines() if "OMP_NUM_THREADS" in line]) == 1, result.stderr


# --- the smaller items -----------------------------------------------------------------------------------------


def test_an_inherited_plan_variable_never_reaches_a_standalone_script() -> None:
    result = ds("show.py", env=clean_env(DS_HELPER_PLAN="{}", SHOW_ALSO="DS_HELPER_PLAN"))
    assert result.returncode == 0, result.stderr
    assert [row["DS_HELPER_PLAN"] for row in json_lines(result.stdout)] == [None]


def test_a_rank_that_starts_its_own_job_gets_the_inner_jobs_numbers(tmp_path: Path) -> None:
    outer = tmp_path / "outer.py"
    outer.write_text(
        "import os, subprocess, sys\n"
        f"subprocess.run([{DS_HELPER!r}, 'job.ranks=3', {str(SCRIPTS / 'show.py')!r}, 'inner'], check=True)\n"
    )
    result = ds("job.ranks=2", str(outer))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [row for row in json_lines(result.stdout) if row["argv"] == ["inner"]]
    assert sorted((r["RANK"], r["WORLD_SIZE"]) for r in rows) == sorted([(str(r), "3") for r in range(3)] * 2)
    ports = {r["MASTER_PORT"] for r in rows}
    assert len(ports) == 2  # each inner job its own port, not the outer job's


def test_local_ranks_keep_inherited_descriptors_and_only_rank_0_reads_stdin(tmp_path: Path) -> None:
    probe = tmp_path / "fds.py"
    probe.write_text(
        "import json, os, sys\n"
        "try:\n    os.fstat(int(sys.argv[1])); kept = True\nexcept OSError:\n    kept = False\n"
        "print(json.dumps({'RANK': os.environ['RANK'], 'kept': kept, 'stdin': sys.stdin.read()}), flush=True)\n"
    )
    read, write = os.pipe()
    try:
        result = subprocess.run(
            [DS_HELPER, "job.ranks=2", str(probe), str(read)],
            env=clean_env(),
            input="hello",
            capture_output=True,
            text=True,
            timeout=120,
            pass_fds=(read,),
        )
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 0, result.stderr
    assert [(r["kept"], r["stdin"]) for r in json_lines(result.stdout)] == [(True, "hello"), (True, "")]


def test_a_module_after_dash_m_gets_a_hint_about_module_true() -> None:
    assert_user_error(ds("job.ranks=2", "-m", "torch.distributed.run"), "module=true script=torch.distributed.run")


def test_an_infinite_grace_is_refused_as_not_a_finite_number() -> None:
    message = assert_user_error(ds("log.grace=inf", "show.py"), "log.grace=inf")
    assert "negative" not in message


def test_save_plan_to_a_folder_name_is_refused_and_makes_no_file(tmp_path: Path) -> None:
    assert_user_error(ds("--save-plan", f"{tmp_path}/newdir/", "show.py"), "newdir/")
    assert list(tmp_path.iterdir()) == []


def site_job_like_mpich(tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    """A 2-rank job of launcher=site: a site's launcher file made from mpich.yaml with ``old`` changed to ``new``."""
    site = tmp_path / "launchers"
    site.mkdir()
    text = (Path(__file__).parent.parent / "conf" / "launcher" / "mpich.yaml").read_text()
    assert old in text
    text = text.replace("name: mpich", "name: site").replace(old, new)
    (site / "site.yaml").write_text(text.replace("detect: [MPI_LOCALRANKID]", "detect: [SITE_RANK]"))
    return ds("launcher=site", "job.ranks=2", "show.py", env=clean_env(DS_HELPER_LAUNCHER_PATH=str(site)))


def test_a_site_launchers_start_template_takes_plain_placeholders_only(tmp_path: Path) -> None:
    result = site_job_like_mpich(tmp_path, '"{ranks}"', '"{ranks:>999999999999}"')
    assert_user_error(result, "site.yaml", "{ranks:>999999999999}")


def test_plans_are_written_compactly_and_as_utf8(tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    saved = ds("--save-plan", str(plan), "show.py", "\u00e9t\u00e9")
    assert saved.returncode == 0, saved.stderr
    text = plan.read_text(encoding="utf-8")
    assert "\u00e9t\u00e9" in text and "\\u00e9" not in text and "\n " not in text
    assert json.loads(text)["plan"]["args"] == ["\u00e9t\u00e9"]


@pytest.mark.parametrize(
    ("old", "new", "culprit"),
    [
        ("Exit codes: [^\\n]*", "Exit codes: [^\\n*", "start.exit_codes.line: not a regular expression"),
        ("(?P<host>[^\\]:\\s]+)", "([^\\]:\\s]+)", "start.exit_codes.host: needs the group host"),
        ("(?P<codes>", "(", "start.exit_codes.host: needs the group codes"),
    ],
)
def test_a_site_launchers_report_patterns_are_checked_before_anything_starts(
    tmp_path: Path, old: str, new: str, culprit: str
) -> None:
    assert_user_error(site_job_like_mpich(tmp_path, old, new), f"launcher=site: {culprit}")
