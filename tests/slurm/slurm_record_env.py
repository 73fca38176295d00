"""Record real Slurm task environments into tests/data/env/slurm-*.json.

Usage (root, Slurm installed, see tests/slurm/README.md)::

    python tests/slurm/slurm_record_env.py            # starts/reuses the loopback cluster
    python tests/slurm/slurm_record_env.py --down     # ... and stops it afterwards

Every task dumps its whole os.environ as one JSON line. srun/sbatch are run
from a minimal environment (PATH, HOME, USER, LANG, SLURM_CONF), so what the
files hold beyond those is exactly what Slurm (and its mpi plugin) added.
Stdlib only.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster

OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "env"
DUMP = "import json, os; print(json.dumps(dict(os.environ), sort_keys=True), flush=True)"
NOISE = {"_", "OLDPWD"}  # set by bash in the batch script; nothing else is dropped


def base_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/root",
        "USER": "root",
        "LANG": "C.UTF-8",
    }
    return slurm_cluster.client_env(env)


def slurm_version() -> str:
    out = subprocess.run(
        [shutil.which("srun", path=base_env()["PATH"]) or "srun", "--version"],
        env=base_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"srun --version failed: {out.stderr}")
    out = out.stdout.split()
    return out[-1] if out else "unknown"


def expand_counts(spec: str) -> list[int]:
    """'2(x3),1' -> [2, 2, 2, 1]"""
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"bad tasks-per-node spec {spec!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def first_host(nodelist: str) -> str:
    """First host of a compressed hostlist: 'node[1-2],x' -> 'node1'."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += c == "["
        depth -= c == "]"
        if c == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    m = re.fullmatch(r"([^\[]*)\[([^\],\-]+)[^\]]*\](.*)", first)
    return f"{m.group(1)}{m.group(2)}{m.group(3)}" if m else first


def expect_step(env: dict[str, str]) -> dict[str, str | None]:
    world = int(env["SLURM_STEP_NUM_TASKS"])
    node = int(env["SLURM_NODEID"])
    local_world = expand_counts(env["SLURM_STEP_TASKS_PER_NODE"])[node]
    master = "127.0.0.1" if local_world == world else first_host(env["SLURM_STEP_NODELIST"])
    return {
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env["SLURM_LOCALID"],
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(local_world),
        "NODE_RANK": str(node),
        "MASTER_ADDR": master,
    }


def clean(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k not in NOISE}


def _client(argv: list[str]) -> None:
    """Run a Slurm client command against the loopback cluster; a failure raises with its stderr."""
    res = subprocess.run(argv, env=base_env(), cwd="/tmp", capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:1])} {argv[1:]} failed ({res.returncode}): {res.stderr}")


def run_step(args: list[str]) -> list[dict[str, str]]:
    # One output file per task (%t): srun's own stdout splits long lines.
    with tempfile.TemporaryDirectory(dir=slurm_cluster.STATE_DIR) as tmp:
        _client(["srun", f"--output={tmp}/task-%t.json", *args, sys.executable, "-c", DUMP])
        envs = [json.loads(p.read_text()) for p in Path(tmp).glob("task-*.json")]
    return sorted(envs, key=lambda e: int(e["SLURM_PROCID"]))


def run_batch(args: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory(dir=slurm_cluster.STATE_DIR) as tmp:
        out = Path(tmp) / "env.json"
        script = Path(tmp) / "job.sh"
        script.write_text(f"#!/bin/bash\n{sys.executable} -c '{DUMP}' > {out}\n")
        _client(["sbatch", "--wait", "--quiet", f"--output={tmp}/slurm.out", *args, str(script)])
        return json.loads(out.read_text())


def write(name: str, description: str, launcher: str, ranks: list[dict], version: str) -> None:
    today = datetime.date.today().isoformat()
    doc = {
        "manager": "slurm",
        "description": f"{description} on the two-node loopback cluster (slurm-wlm {version})",
        "sources": [f"recorded on a real slurm-wlm {version} cluster by tests/slurm/slurm_cluster.py, {today}"],
        "expect_launcher": launcher,
        "files": {},
        "ranks": ranks,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / name
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path} ({len(ranks)} ranks)")


def step_ranks(args: list[str]) -> list[dict]:
    return [{"env": clean(e), "expect": expect_step(e)} for e in run_step(args)]


def main(argv: list[str]) -> int:
    slurm_cluster.start()
    version = slurm_version()
    try:
        write(
            "slurm-2node.json",
            "srun -N 2 -n 4",
            "slurm",
            step_ranks(["-N", "2", "-n", "4"]),
            version,
        )
        write(
            "slurm-pmi2.json",
            "srun -N 1 -n 2 --mpi=pmi2",
            "slurm",
            step_ranks(["-N", "1", "-n", "2", "--mpi=pmi2"]),
            version,
        )
        write(
            "slurm-cray-shasta.json",
            "srun -N 2 -n 4 --mpi=cray_shasta",
            "slurm",
            step_ranks(["-N", "2", "-n", "4", "--mpi=cray_shasta"]),
            version,
        )
        batch = run_batch(["-N", "2", "-n", "4"])
        write(
            "slurm-sbatch-no-step.json",
            "environment of an sbatch -N 2 -n 4 batch script before any srun (not a step)",
            "local",
            [
                {
                    "env": clean(batch),
                    "expect": {
                        "RANK": "0",
                        "LOCAL_RANK": "0",
                        "WORLD_SIZE": "1",
                        "LOCAL_WORLD_SIZE": "1",
                        "NODE_RANK": "0",  # a standalone run is node 0 (README)
                        "MASTER_ADDR": "127.0.0.1",
                    },
                }
            ],
            version,
        )
    finally:
        if "--down" in argv:
            slurm_cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
