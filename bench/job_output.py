"""What ds-helper's job supervisor costs to move the ranks' output: interleaved runs, one table.

    python bench/job_output.py [--mb 30] [--runs 5]

Each row runs twice per round, once writing ``--mb`` MB of 100-byte lines per rank and once writing nothing;
the difference is the time spent moving the output (start-up subtracted), as wall time and as CPU time of
all processes (the cost itself, whatever else the machine runs). Rows:

* two bare writers: two ``python writer`` processes started together, both writing to the same file;
* ``ds-helper job.ranks=2``: the same writer as 2 ranks, output copied by ds-helper in whole lines;
* ``ds-helper job.ranks=2 log.label=true``: the same, every line labelled with its rank.

Output goes to a file and its size is checked. Target: the labelled row <= 1.5x the bare writers. Run it with
the interpreter of a clean venv (this machine's pyenv interpreter loads a sandbox .pth at start), whose
``ds-helper`` it uses::

    python3 -m venv /tmp/cleanvenv-job && /tmp/cleanvenv-job/bin/pip install . \
        && /tmp/cleanvenv-job/bin/pip uninstall -y setuptools   # its distutils .pth loads at every start
    /tmp/cleanvenv-job/bin/python bench/job_output.py
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
from typing import Callable

# A rank's log: print() of 99 characters a line (Python buffers them, 8 KiB a write); --writer blocks writes
# 655 lines at a time, the least a writer can cost, which leaves nothing but the copy to measure.
WRITERS = {
    "print": "import sys\nline = 'x' * 99\nfor _ in range(int(sys.argv[1]) // 100):\n    print(line)\n",
    "blocks": (
        "import sys\nblock = (b'x' * 99 + b'\\n') * 655\n"
        "for _ in range(int(sys.argv[1]) // len(block)):\n    sys.stdout.buffer.write(block)\n"
    ),
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(commands: list[list[str]], out_path: str) -> tuple[float, float]:
    """(seconds, CPU seconds of every process) until every command (started together, all writing to
    ``out_path``) has ended. CPU time tells the cost apart from waiting on a busy machine."""
    with open(out_path, "wb") as out:
        cpu = _cpu()
        start = time.perf_counter()
        procs = [subprocess.Popen(c, stdout=out, stdin=subprocess.DEVNULL) for c in commands]
        codes = [proc.wait() for proc in procs]
        took = time.perf_counter() - start
    if any(codes):
        sys.exit(f"{commands} failed: {codes}")
    return took, _cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writer", choices=sorted(WRITERS), default="print")
    options = parser.parse_args()
    beside = os.path.join(os.path.dirname(sys.executable), "ds-helper")
    ds_helper = beside if os.path.exists(beside) else shutil.which("ds-helper")
    if not ds_helper:
        sys.exit("ds-helper is not installed (see README)")
    block = 100 * 655
    size = options.mb * 2**20 // block * block
    with tempfile.TemporaryDirectory() as scratch:
        writer = os.path.join(scratch, "writer.py")
        with open(writer, "w") as handle:
            handle.write(WRITERS[options.writer])
        job = [ds_helper, "job.ranks=2", "log.quiet=true"]
        # name: (bytes of label per line, the commands for n bytes per rank)
        rows: dict[str, tuple[int, Callable[[int], list[list[str]]]]] = {
            "two bare writers": (0, lambda n: [[sys.executable, writer, str(n)]] * 2),
            "ds-helper job.ranks=2": (0, lambda n: [[*job, writer, str(n)]]),
            "ds-helper job.ranks=2 log.label=true": (len("[0] "), lambda n: [[*job, "log.label=true", writer, str(n)]]),
        }
        moved: dict[str, list[float]] = {name: [] for name in rows}
        moved_cpu: dict[str, list[float]] = {name: [] for name in rows}
        starts: dict[str, list[float]] = {name: [] for name in rows}
        out = os.path.join(scratch, "out")
        for _ in range(options.runs):
            for name, (label_bytes, make) in rows.items():  # interleaved: drift hits every row alike
                full, full_cpu = timed(make(size), out)
                expected = 2 * size + 2 * (size // 100) * label_bytes
                if os.path.getsize(out) != expected:
                    sys.exit(f"{name}: wrote {os.path.getsize(out)} bytes, expected {expected}")
                silent, silent_cpu = timed(make(0), out)
                starts[name].append(silent)
                moved[name].append(full - silent)
                moved_cpu[name].append(full_cpu - silent_cpu)
    bare = statistics.median(moved["two bare writers"])
    bare_cpu = statistics.median(moved_cpu["two bare writers"])
    print(f"2 ranks x {options.mb} MB of 100-byte lines ({options.writer}) to a file, median of {options.runs} runs")
    print(f"load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<40} {'start s':>8} {'moving s':>9} {'x bare':>7} {'moving CPU s':>13} {'x bare':>7}")
    for name in rows:
        median, cpu = statistics.median(moved[name]), statistics.median(moved_cpu[name])
        start = statistics.median(starts[name])
        print(f"{name:<40} {start:>8.2f} {median:>9.2f} {median / bare:>7.2f} {cpu:>13.2f} {cpu / bare_cpu:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
