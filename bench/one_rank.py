"""Start-up of one standalone rank next to ``python -c pass``: medians of interleaved runs, one table.

    python bench/one_rank.py [--runs 30]

Rows: ``python -c pass``; ``python empty.py``; ``ds-helper empty.py`` (composes with Hydra, then execs
``python -u empty.py``); ``ds-helper --plan`` (a plan saved once); the same plan with ``run_mode=inprocess``.
Every row is started directly (no process manager), after one warm-up run each, in a scratch directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    python = sys.executable
    sibling = os.path.join(os.path.dirname(python), "ds-helper")
    ds_helper = sibling if os.path.exists(sibling) else shutil.which("ds-helper")
    if not ds_helper:
        sys.exit("ds-helper is not installed (see README)")
    with tempfile.TemporaryDirectory(prefix="ds-one-") as work:
        with open(os.path.join(work, "empty.py"), "w") as script:
            script.write("pass\n")
        for name, extra in (("plan.json", []), ("inprocess.json", ["run_mode=inprocess"])):
            subprocess.run([ds_helper, "log.quiet=true", *extra, "--save-plan", name, "empty.py"], cwd=work, check=True)
        rows = {
            "python -c pass": [python, "-c", "pass"],
            "python empty.py": [python, "empty.py"],
            "ds-helper empty.py (compose)": [ds_helper, "log.quiet=true", "empty.py"],
            "ds-helper --plan": [ds_helper, "--plan", "plan.json"],
            "ds-helper --plan, run_mode=inprocess": [ds_helper, "--plan", "inprocess.json"],
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for round_ in range(runs + 1):
            for name, argv in rows.items():
                start = time.perf_counter()
                subprocess.run(argv, cwd=work, check=True, stdin=subprocess.DEVNULL)
                if round_:  # the first round warms caches
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(
        f"command: {' '.join([python, *sys.argv])}  ({runs} interleaved runs, medians; load {os.getloadavg()[0]:.2f})"
    )
    print("\n| row | median ms | x python -c pass |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {median / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
