"""What the ``log.tee`` supervisor costs on output without newlines: interleaved runs, one table.

    python bench/tee.py [--mb 40] [--runs 3]

Rows: the script alone (``python -u long_line.py``, output to a file) and the same under ``ds-helper
log.tee=true`` (prefix on). Each run is started from a fresh measuring process, so the peak RSS is that of
this run's processes (the supervisor's, ds-helper's before it execs, and the script's). Output bytes are
checked. Reading: the tee row's time and peak memory should stay close to the bare row's at any size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "scripts", "long_line.py")
MEASURE = (
    "import resource, subprocess, sys, time\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    start = time.perf_counter()\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out, stdin=subprocess.DEVNULL).returncode\n"
    "    took = time.perf_counter() - start\n"
    "print(code, took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def one_run(command: list[str], out: str) -> tuple[float, int, int]:
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, out, *command], capture_output=True, text=True, check=True
    )
    code, took, peak_kib = measured.stdout.split()
    if code != "0":
        sys.exit(f"{command} failed: {measured.stderr}")
    return float(took), int(peak_kib), os.path.getsize(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    size = options.mb * 2**20
    ds_helper = shutil.which("ds-helper")
    if not ds_helper:
        sys.exit("ds-helper is not installed (see README)")
    rows = {
        "python -u long_line.py": [sys.executable, "-u", SCRIPT, str(size)],
        "ds-helper log.tee=true long_line.py": [ds_helper, "log.quiet=true", "log.tee=true", SCRIPT, str(size)],
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    peaks: dict[str, list[int]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "out")
        for _ in range(options.runs):
            for name, command in rows.items():  # interleaved: drift hits both rows alike
                took, peak, written = one_run(command, out)
                expected = size if name.startswith("python") else size + len("[0] \n")
                if written != expected:
                    sys.exit(f"{name}: wrote {written} bytes, expected {expected}")
                times[name].append(took)
                peaks[name].append(peak)
    bare = statistics.median(times["python -u long_line.py"])
    print(f"{options.mb} MB without a newline, median of {options.runs} interleaved runs")
    print(f"{'command':<40} {'seconds':>8} {'ratio':>6} {'peak RSS MB':>12}")
    for name in rows:
        median = statistics.median(times[name])
        print(f"{name:<40} {median:>8.2f} {median / bare:>6.2f} {max(peaks[name]) / 1024:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
