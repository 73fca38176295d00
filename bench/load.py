"""Load: many oversubscribed ranks through ds-helper, launched again and again; every launch must be perfect.

Not a test (it takes tens of minutes on a 2-CPU machine); a plain script that prints one table.

    python bench/load.py [--ranks 64] [--launches 100] [--modes plan,compose] [--manager mpiexec.mpich]

Each launch is ``MANAGER -n RANKS ds-helper ... report.py TOKEN`` (compose path: overrides on every rank;
plan path: ``--plan plan.json`` saved once). A launch counts as good only when the manager exits 0, exactly
RANKS lines arrive, their RANK values are 0..RANKS-1 with WORLD_SIZE and LOCAL_WORLD_SIZE equal to RANKS, and
afterwards no process whose command line holds the launch's unique TOKEN is left (checked in /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List

REPORT = """\
import json, os, sys
print(json.dumps({k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}), flush=True)
"""


def leftovers(token: str) -> List[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


def check(result: subprocess.CompletedProcess, ranks: int) -> str:
    """'' for a perfect launch, else what was wrong."""
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr.strip()[-200:]}"
    # The manager forwards each rank's output in chunks: two ranks' lines may share a line.
    rows = [json.loads(match) for match in re.findall(r"\{[^{}]*\}", result.stdout)]
    if sorted(int(r["RANK"]) for r in rows) != list(range(ranks)):
        return f"ranks seen: {sorted(r['RANK'] for r in rows)}"
    if any(r["WORLD_SIZE"] != str(ranks) or r["LOCAL_WORLD_SIZE"] != str(ranks) for r in rows):
        return "wrong sizes"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--launches", type=int, default=100)
    parser.add_argument("--modes", default="plan,compose")
    parser.add_argument("--manager", default="mpiexec.mpich")
    args = parser.parse_args()
    ds_helper = shutil.which("ds-helper", path=os.path.dirname(sys.executable)) or shutil.which("ds-helper")
    if not ds_helper:
        sys.exit("ds-helper is not installed (see README)")
    work = Path(tempfile.mkdtemp(prefix="ds-helper-load-"))
    (work / "report.py").write_text(REPORT)
    subprocess.run([ds_helper, "log.quiet=true", "--save-plan", "plan.json", "report.py"], cwd=work, check=True)
    commands: Dict[str, List[str]] = {
        "plan": [ds_helper, "--plan", "plan.json", "--"],
        "compose": [ds_helper, "log.quiet=true", "report.py"],
    }
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"{args.manager} -n {args.ranks}, {args.launches} launches per mode, {os.cpu_count()} CPUs\n")
    print("| mode | launches | good | failed | left-over processes | median s | max s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    failures = 0
    for mode in args.modes.split(","):
        times: List[float] = []
        bad: List[str] = []
        stray = 0
        for _ in range(args.launches):
            token = f"load-{uuid.uuid4().hex}"
            argv = [args.manager, "-n", str(args.ranks), *commands[mode], token]
            start = time.perf_counter()
            result = subprocess.run(
                argv, cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600
            )
            times.append(time.perf_counter() - start)
            problem = check(result, args.ranks)
            left = leftovers(token)
            stray += len(left)
            if problem or left:
                bad.append(problem or f"{len(left)} processes left")
        failures += len(bad)
        print(
            f"| {mode} | {args.launches} | {args.launches - len(bad)} | {len(bad)} | {stray} | "
            f"{statistics.median(times):.2f} | {max(times):.2f} |",
            flush=True,
        )
        for problem in sorted(set(bad))[:5]:
            print(f"    {mode}: {problem}")
    shutil.rmtree(work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
