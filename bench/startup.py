"""Start-up cost of a rank under a real ``mpiexec -n N``: bare python, ds-helper three ways, and their floors.

Not a test: a plain script that prints one table (and the command and machine facts that made it).

    python bench/startup.py [--quick] [--sizes 2,16] [--repeats 61,9] [--mpiexec mpiexec.mpich] [--venv DIR]

Everything runs in a CLEAN venv, what users have: ``python3 -m venv`` of the base interpreter (``--base-python``,
default the one this venv was made from), hydra-core and omegaconf from the package index, and ds-helper
installed from this checkout, NOT editable (re-installed on every run, so it is the code of the checkout). The
venv is kept in ``--venv`` (default ``~/.cache/ds-helper-bench/clean-venv``). Its interpreter does not read this
machine's site-packages, so no ``.pth`` file there runs at start-up (on the development VMs one imports certifi,
~20 ms per interpreter); the script checks that neither certifi nor sitecustomize is in its ``sys.modules``.
The ``PYTHON*`` variables of this shell (PYTHONDONTWRITEBYTECODE, PYTHONUNBUFFERED on these VMs) are removed
from the runs' environment.

Rows, each started as ``mpiexec -n N CMD`` in a scratch directory holding an empty ``script.py``:

- ``python script.py``: the bare interpreter (the clean venv's ``bin/python``; no pyenv shim in the way).
- ``ds-helper --plan``: ``ds-helper --plan plan.json``, the plan saved once before timing by
  ``ds-helper log.quiet=true script=script.py --save-plan plan.json``.
- ``ds-helper --plan, binding``: the same with a plan saved with ``bind=cores`` (one core per rank): binding's
  modules and the reading of ``/sys`` on every rank. Run only where N is at most the CPUs this process may use
  (``bind=cores`` refuses more ranks than cores).
- ``floor: two interpreters (exec)``: ``python -c <exec python -u script.py>``: an interpreter that only execs the
  script's, what any start that ends in exec (``--plan``) costs at the least.
- ``ds-helper --plan, run_mode=inprocess``: the same with a plan saved with ``run_mode=inprocess``: the script
  runs in ds-helper's own interpreter, so one interpreter start instead of two.
- ``floor: in process``: ``python bench/inprocess_floor.py plan-inprocess.json``: the same plan read without
  any check, kill-with-parent armed, the script compiled and run: what any in-process start costs at the least.
- ``ds-helper (compose)``: ``ds-helper log.quiet=true script=script.py``: Hydra composes on every rank.
- ``floor: compose with Hydra alone``: ``python bench/hydra_floor.py script.py``, which imports Hydra, composes
  a config of nothing and execs ``python -u script.py``: what any rank composing with Hydra costs at the least.

The rows without run_mode=inprocess exec ``python -u script.py`` at the end, so they include the script's own
interpreter start.
The ``ds-helper`` used is the clean venv's ``bin/ds-helper``.

Columns and how each is measured:

- ``wall ms``: median wall time of the whole ``mpiexec`` run (``time.perf_counter`` around ``subprocess.run``).
  Rounds are interleaved (each round runs every row once, per N, in turn), after one warm-up run per command,
  so a busy period of the machine hits every row alike.
- ``x bare``: that median over the bare row's median for the same N (the issue's targets are for N=2).
- ``paired``: the median over rounds of the run's wall time over the bare row's in the same round: paired within
  a round, so a machine that gets busier or quieter during the benchmark moves both alike. It is usually a little
  lower than ``x bare``: read both.
- ``cpu s/rank``: median over rounds of the ``resource.getrusage(RUSAGE_CHILDREN)`` user+system delta of one run,
  divided by N. It includes mpiexec's and its proxy's CPU (the same for every row of one N).
- ``helper RSS MB``: peak RSS of the helper itself on one rank, before any exec: the same command with a dry run
  (``dry_run=true``, or a plan saved with it), which resolves everything and prints instead of exec'ing, is run as
  ``mpiexec -n N /usr/bin/time -f %M CMD`` and the median of the ranks' ``%M`` is shown. For the bare row it is
  the interpreter running the empty script. (A non-dry run would report max(helper, script): Linux keeps the
  peak across execve.)
- ``file sc/rank``: file syscalls (``strace -f -c -e trace=%file,read``) of one whole ``mpiexec`` run, divided
  by N, with nothing subtracted: mpiexec's and its proxy's own calls are in every row (compare with the bare row).
  The proxy's ``read`` calls follow the ranks' output and run time, so this column is noisy.
- ``own file sc``: the same count for one rank alone (helper and the script it becomes), strace started inside
  mpiexec around each rank (``mpiexec -n N python -c <exec strace -o DIR/rank.$PMI_RANK CMD>``), median over
  ranks; mpiexec's own calls are not in it.

With ``--deepspeed PYTHON`` a row for DeepSpeed's ``launcher_helper`` (``PYTHON -m
deepspeed.launcher.launcher_helper --launcher mpich script.py``) is added; PYTHON is an interpreter with
DeepSpeed installed (e.g. a venv).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

DEFAULT_SIZES = "2,16"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ds-helper-bench")
DEEPSPEED_VENV = os.path.join(CACHE, "deepspeed-venv")
CLEAN_VENV = os.path.join(CACHE, "clean-venv")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HYDRA_FLOOR = os.path.join(CHECKOUT, "bench", "hydra_floor.py")
ONE_CORE_PER_RANK = ("ds-helper --plan, binding",)  # rows run only where every rank gets a core of its own
INPROCESS_FLOOR = os.path.join(CHECKOUT, "bench", "inprocess_floor.py")
# An interpreter that only execs the next one, as --plan ends: the least any start that execs the script costs.
EXEC_FLOOR = "import os, sys; os.execv(sys.executable, [sys.executable, '-u', sys.argv[1]])"
# What this machine's own start-up adds to every interpreter: must not be in the clean venv's.
SANDBOX_MODULES = ("certifi", "sitecustomize", "usercustomize")


def base_python() -> str:
    """The interpreter this one was made from (a venv's base), as ``python3 -m venv`` users run it."""
    base = getattr(sys, "_base_executable", sys.executable)
    return os.path.realpath(base)


def clean_venv(path: str, python: str, env: Dict[str, str]) -> str:
    """A plain venv with ds-helper installed from this checkout (not editable); its interpreter's path."""
    venv_python = os.path.join(path, "bin", "python")
    if not os.path.exists(venv_python):
        print(f"creating the clean venv {path} from {python} ...", file=sys.stderr)
        subprocess.run([python, "-m", "venv", path], check=True, env=env)
        subprocess.run([venv_python, "-m", "pip", "install", "-q", CHECKOUT], check=True, env=env)
    # The checkout's current code, compiled to .pyc by pip as any install is.
    pip = [venv_python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", CHECKOUT]
    subprocess.run(pip, check=True, env=env, stdout=subprocess.DEVNULL)
    probe = f"import sys; print(' '.join(m for m in sys.modules if m.split('.')[0] in {SANDBOX_MODULES!r}))"
    found = subprocess.run([venv_python, "-c", probe], capture_output=True, text=True, env=env).stdout.split()
    if found:
        sys.exit(f"{venv_python} imports {', '.join(found)} at start-up: not a clean interpreter")
    return venv_python


def deepspeed_python() -> str:
    """An interpreter with DeepSpeed, in a venv of the benchmark's own, made on first use (a few minutes)."""
    python = os.path.join(DEEPSPEED_VENV, "bin", "python")
    check = subprocess.run([python, "-c", "import deepspeed"], capture_output=True) if os.path.exists(python) else None
    if check is not None and check.returncode == 0:
        return python
    print(f"installing DeepSpeed into {DEEPSPEED_VENV} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", DEEPSPEED_VENV], check=True)
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0", "setuptools", "wheel"], check=True)  # the CPU build on this machine
    # DeepSpeed ships as a source package; build none of its C++/CUDA ops, as on a CPU-only node.
    subprocess.run([*pip, "--no-build-isolation", "deepspeed"], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    return python


_TOTAL = r"^\s*100\.00\s+\S+\s+(?:\S+\s+)?(\d+)\s+(?:\d+\s+)?total"  # strace -c's last line
DEFAULT_REPEATS = "61,9"
QUICK_REPEATS = "5,3"


def _run(argv: Sequence[str], cwd: str, env: Dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: Sequence[str], cwd: str, env: Dict[str, str]) -> tuple[float, float]:
    cpu = _children_cpu()
    start = time.perf_counter()
    result = _run(argv, cwd, env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(argv)}\n{result.stderr.decode()[-2000:]}")
    return wall, _children_cpu() - cpu


def peak_rss_mb(mpiexec: List[str], cmd: List[str], cwd: str, env: Dict[str, str]) -> float:
    # Each rank appends its line to one file (O_APPEND: whole lines); on the shared stderr, two ranks' lines can
    # arrive interleaved character by character.
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        result = _run([*mpiexec, "/usr/bin/time", "-a", "-o", out.name, "-f", "PEAK_RSS_KB=%M", *cmd], cwd, env)
        values = [int(v) for v in re.findall(r"PEAK_RSS_KB=(\d+)", out.read())]
    if len(values) != int(mpiexec[-1]):
        sys.exit(f"no RSS from every rank of {' '.join(cmd)}:\n{result.stderr.decode()[-2000:]}")
    return statistics.median(values) / 1024


def file_syscalls(mpiexec: List[str], cmd: List[str], cwd: str, env: Dict[str, str]) -> int:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        argv = ["strace", "-f", "-c", "-e", "trace=%file,read", "-o", out.name, *mpiexec, *cmd]
        result = _run(argv, cwd, env)
        if result.returncode != 0:
            sys.exit(f"strace run failed: {result.stderr.decode()[-2000:]}")
        match = re.search(_TOTAL, out.read(), re.MULTILINE)
    if match is None:
        sys.exit("cannot read strace's summary")
    return int(match.group(1))


def rank_file_syscalls(mpiexec: List[str], cmd: List[str], cwd: str, env: Dict[str, str]) -> float:
    """Median over ranks of one rank's own file syscalls: strace runs inside mpiexec, one summary per rank."""
    with tempfile.TemporaryDirectory(prefix="ds-bench-strace-") as out:
        # Each rank execs strace with its own output file; a tiny Python wrapper, never a shell.
        wrapper = (
            "import os, sys; out = os.path.join(sys.argv[1], 'rank.' + os.environ['PMI_RANK']); "
            "os.execvp('strace', ['strace', '-f', '-c', '-e', 'trace=%file,read', '-o', out, *sys.argv[2:]])"
        )
        result = _run([*mpiexec, sys.executable, "-c", wrapper, out, *cmd], cwd, env)
        if result.returncode != 0:
            sys.exit(f"strace run failed: {result.stderr.decode()[-2000:]}")
        counts = []
        for name in os.listdir(out):
            with open(os.path.join(out, name)) as f:
                match = re.search(_TOTAL, f.read(), re.MULTILINE)
            if match is None:
                sys.exit("cannot read strace's summary")
            counts.append(int(match.group(1)))
    return statistics.median(counts)


def machine_facts(python: str, ds_helper: str, mpiexec: str, load: Sequence[float]) -> List[str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    version = _run([mpiexec, "--version"], "/", dict(os.environ)).stdout.decode()
    mpi = re.search(r"Version:\s*(\S+)", version)
    hydra = (
        _run(
            [python, "-c", "import hydra, omegaconf; print(hydra.__version__, omegaconf.__version__)"],
            "/",
            dict(os.environ),
        )
        .stdout.decode()
        .split()
    )
    return [
        f"cpu: {cpu}, {os.cpu_count()} CPUs (ranks beyond that are oversubscribed); load average at start: "
        f"{', '.join(f'{x:.2f}' for x in load)}",
        f"kernel {platform.release()}; python {platform.python_version()} ({python}); "
        f"hydra-core {hydra[0] if hydra else '?'}, omegaconf {hydra[1] if len(hydra) > 1 else '?'}",
        f"{mpiexec} {mpi.group(1) if mpi else '?'}; ds-helper: {ds_helper}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"fewer rounds ({QUICK_REPEATS})")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="rank counts N (default %(default)s)")
    parser.add_argument("--repeats", default=None, help=f"rounds per N (default {DEFAULT_REPEATS})")
    parser.add_argument("--mpiexec", default="mpiexec.mpich")
    parser.add_argument("--no-strace", action="store_true", help="skip the file syscall columns")
    parser.add_argument("--venv", default=CLEAN_VENV, help="the clean venv (made if missing; default %(default)s)")
    parser.add_argument("--base-python", default=base_python(), help="makes the venv (default %(default)s)")
    parser.add_argument(
        "--deepspeed",
        nargs="?",
        const="install",
        metavar="PYTHON",
        help="add DeepSpeed's launcher_helper, run by PYTHON; without PYTHON, a venv of its own is made (once) in "
        f"{DEEPSPEED_VENV} with CPU torch==2.13.0 and deepspeed",
    )
    opts = parser.parse_args()
    load = os.getloadavg()
    usable = len(os.sched_getaffinity(0))

    sizes = [int(n) for n in opts.sizes.split(",")]
    repeats = [int(r) for r in (opts.repeats or (QUICK_REPEATS if opts.quick else DEFAULT_REPEATS)).split(",")]
    repeats = (repeats + [repeats[-1]] * len(sizes))[: len(sizes)]
    skip = ("PMI_", "OMPI_", "SLURM_", "DS_HELPER", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    python = clean_venv(opts.venv, opts.base_python, env)
    ds_helper = os.path.join(os.path.dirname(python), "ds-helper")

    with tempfile.TemporaryDirectory(prefix="ds-bench-") as work:
        with open(os.path.join(work, "script.py"), "w") as f:
            f.write("pass\n")
        for name, extra in (
            ("plan.json", []),
            ("plan-dry.json", ["dry_run=true"]),
            ("plan-bind.json", ["bind=cores"]),
            ("plan-bind-dry.json", ["bind=cores", "dry_run=true"]),
            ("plan-inprocess.json", ["run_mode=inprocess"]),
            ("plan-inprocess-dry.json", ["run_mode=inprocess", "dry_run=true"]),
        ):
            saved = _run([ds_helper, "log.quiet=true", "script=script.py", *extra, "--save-plan", name], work, env)
            if saved.returncode != 0:
                sys.exit(saved.stderr.decode())
        rows: Dict[str, tuple[List[str], List[str]]] = {  # name -> (command, its dry-run twin for RSS)
            "python script.py": ([python, "script.py"], [python, "script.py"]),
            "ds-helper --plan": ([ds_helper, "--plan", "plan.json"], [ds_helper, "--plan", "plan-dry.json"]),
            "ds-helper --plan, binding": (
                [ds_helper, "--plan", "plan-bind.json"],
                [ds_helper, "--plan", "plan-bind-dry.json"],
            ),
            "floor: two interpreters (exec)": ([python, "-c", EXEC_FLOOR, "script.py"], [python, "-c", "pass"]),
            "ds-helper --plan, run_mode=inprocess": (
                [ds_helper, "--plan", "plan-inprocess.json"],
                [ds_helper, "--plan", "plan-inprocess-dry.json"],
            ),
            "floor: in process": (
                [python, INPROCESS_FLOOR, "plan-inprocess.json"],
                [python, INPROCESS_FLOOR, "--no-run", "plan-inprocess.json"],
            ),
            "ds-helper (compose)": (
                [ds_helper, "log.quiet=true", "script=script.py"],
                [ds_helper, "log.quiet=true", "script=script.py", "dry_run=true"],
            ),
            "floor: compose with Hydra alone": (
                [python, HYDRA_FLOOR, "script.py"],
                [python, HYDRA_FLOOR, "--no-exec", "script.py"],
            ),
        }
        if opts.deepspeed == "install":
            opts.deepspeed = deepspeed_python()
        if opts.deepspeed:
            helper = [opts.deepspeed, "-m", "deepspeed.launcher.launcher_helper", "--launcher", "mpich"]
            rows["deepspeed launcher_helper"] = ([*helper, "script.py"], [opts.deepspeed, "-c", "import deepspeed"])

        results: Dict[tuple[int, str], Dict[str, float]] = {}
        all_rows = rows
        for n, rounds in zip(sizes, repeats, strict=True):
            rows = {name: row for name, row in all_rows.items() if name not in ONE_CORE_PER_RANK or n <= usable}
            mpiexec = [opts.mpiexec, "-n", str(n)]
            for cmd, _ in rows.values():
                timed([*mpiexec, *cmd], work, env)  # warm-up: page cache, .pyc
            walls: Dict[str, List[float]] = {name: [] for name in rows}
            cpus: Dict[str, List[float]] = {name: [] for name in rows}
            for _ in range(rounds):
                for name, (cmd, _) in rows.items():
                    wall, cpu = timed([*mpiexec, *cmd], work, env)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            for name, (_, dry) in rows.items():
                results[(n, name)] = {
                    "wall": statistics.median(walls[name]),
                    "ratio": statistics.median(
                        wall / bare for wall, bare in zip(walls[name], walls["python script.py"], strict=True)
                    ),
                    "cpu": statistics.median(cpus[name]) / n,
                    "rss": peak_rss_mb(mpiexec, dry, work, env),
                    "sc": float("nan") if opts.no_strace else file_syscalls(mpiexec, rows[name][0], work, env) / n,
                    "own": float("nan") if opts.no_strace else rank_file_syscalls(mpiexec, rows[name][0], work, env),
                }
            print(f"  ... N={n} done ({rounds} rounds)", file=sys.stderr, flush=True)

    command = " ".join(["python", "bench/startup.py", *sys.argv[1:]])
    print(f"command: {command}")
    for fact in machine_facts(python, ds_helper, opts.mpiexec, load):
        print(fact)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (2 CPUs shared: see the spread)")
    print(f"rounds per N: {dict(zip(sizes, repeats, strict=True))} (interleaved, medians)\n")
    header = ("N", "row", "wall ms", "x bare", "paired", "cpu s/rank", "helper RSS MB", "file sc/rank", "own file sc")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i != 1 else "---" for i in range(len(header))) + "|")
    for n in sizes:
        bare = results[(n, "python script.py")]["wall"]
        for name in all_rows:
            if (n, name) not in results:
                continue
            r = results[(n, name)]
            sc, own = ("-" if r[k] != r[k] else f"{r[k]:.0f}" for k in ("sc", "own"))
            cells = (
                str(n),
                name,
                f"{r['wall'] * 1000:.{1 if r['wall'] < 0.1 else 0}f}",
                f"{r['wall'] / bare:.2f}",
                f"{r['ratio']:.2f}",
                f"{r['cpu']:.3f}",
                f"{r['rss']:.1f}",
                sc,
                own,
            )
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
