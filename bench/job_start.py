"""Whole-job start: ``ds-helper launcher=mpich job.ranks=N`` against bare ``mpiexec -n N python`` and against the
per-rank compose path (``mpiexec -n N ds-helper``). Not a test: a plain script that prints one table.

    python bench/job_start.py [--sizes 2,16,32] [--rounds 5] [--mpiexec mpiexec.mpich]

Run it with the interpreter of a clean venv (no sitecustomize, no .pth of the machine), e.g.::

    python3 -m venv /tmp/cleanvenv-job && /tmp/cleanvenv-job/bin/pip install . \
        && /tmp/cleanvenv-job/bin/pip uninstall -y setuptools   # its distutils .pth loads at every start
    /tmp/cleanvenv-job/bin/python bench/job_start.py

Rows, each run in a scratch folder holding an empty ``script.py`` (the ``ds-helper`` next to ``sys.executable``):

- ``bare``: ``mpiexec -n N python -u script.py``.
- ``per-rank compose``: ``mpiexec -n N ds-helper log.quiet=true script.py``: every rank composes with Hydra.
- ``job start (mpich)``: ``ds-helper launcher=mpich job.program=MPIEXEC job.ranks=N log.quiet=true script.py``:
  composed once, the plan handed to every rank in ``DS_HELPER_PLAN`` (docs/jobs.md).
- ``job start (local)``: ``ds-helper job.ranks=N log.quiet=true script.py``: no manager, ds-helper starts the ranks.

Each figure is the median over the rounds of the wall time of the whole command (``time.perf_counter`` around
``subprocess.run``) and of its CPU time (user + system of every process it ran, ``RUSAGE_CHILDREN``; steadier
than wall time on a busy machine); every round runs every row for every N in turn (interleaved), after one
warm-up run of each, so a busy period of the machine hits every row alike. Ratios are against the bare row and
the per-rank compose row of the same N.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List


def ds_helper() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "ds-helper")
    return beside if os.path.exists(beside) else (shutil.which("ds-helper") or "ds-helper")


def rows(n: int, mpiexec: str) -> Dict[str, List[str]]:
    ds = ds_helper()
    return {
        "bare": [mpiexec, "-n", str(n), sys.executable, "-u", "script.py"],
        "per-rank compose": [mpiexec, "-n", str(n), ds, "log.quiet=true", "script.py"],
        "job start (mpich)": [
            ds,
            "launcher=mpich",
            f"job.program={mpiexec}",
            f"job.ranks={n}",
            "log.quiet=true",
            "script.py",
        ],
        "job start (local)": [ds, f"job.ranks={n}", "log.quiet=true", "script.py"],
    }


RETRIED: List[str] = []


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: List[str], cwd: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system of every process of the run) of one successful run.

    Hydra now and then aborts a run of many short ranks ("assert (!closed) failed", with bare python too); such a
    run is repeated, and listed under the table."""
    for _ in range(3):
        started, cpu = time.perf_counter(), _children_cpu()
        result = subprocess.run(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if result.returncode == 0:
            return time.perf_counter() - started, _children_cpu() - cpu
        RETRIED.append(f"{' '.join(argv[:4])} ...: exit {result.returncode}: {result.stderr.strip()[:120]}")
    raise SystemExit(f"failed three times: {argv}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,16,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mpiexec", default="mpiexec.mpich")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    env_note = [m for m in sys.modules if m in ("sitecustomize", "_distutils_hack", "certifi")]
    print(f"# {sys.executable} (python {sys.version.split()[0]}), {os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"# start-up modules of the machine in this interpreter: {env_note or 'none'}")
    times: Dict[tuple[int, str], List[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        open(os.path.join(scratch, "script.py"), "w").close()
        commands = {n: rows(n, args.mpiexec) for n in sizes}
        for n in sizes:
            for argv in commands[n].values():
                timed(argv, scratch)  # warm-up: page cache, .pyc files
        for _ in range(args.rounds):
            for n in sizes:
                for name, argv in commands[n].items():
                    times.setdefault((n, name), []).append(timed(argv, scratch))
    ratios = f"{'x bare':>7} {'x compose':>10}"
    print(f"{'N':>3}  {'row':<18} {'wall ms':>8} {ratios} {'cpu ms':>7} {ratios}")
    for n in sizes:
        wall = {name: statistics.median(w for w, _ in runs) for (size, name), runs in times.items() if size == n}
        cpu = {name: statistics.median(c for _, c in runs) for (size, name), runs in times.items() if size == n}
        for name in commands[n]:
            print(
                f"{n:>3}  {name:<18} {wall[name] * 1000:>8.0f} {wall[name] / wall['bare']:>7.2f} "
                f"{wall[name] / wall['per-rank compose']:>10.2f} {cpu[name] * 1000:>7.0f} "
                f"{cpu[name] / cpu['bare']:>7.2f} {cpu[name] / cpu['per-rank compose']:>10.2f}"
            )
    for line in RETRIED:
        print(f"# repeated after a failed run: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
