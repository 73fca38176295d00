"""Prints, as one JSON line, what this rank was given: the rank variables, argv, pid and CPU affinity."""

import json
import os
import sys

NAMES = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "LOCAL_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
]
extra = [name for name in os.environ.get("SHOW_ALSO", "").split(",") if name]
report = {name: os.environ.get(name) for name in NAMES + extra}
report.update(
    argv=sys.argv[1:],
    pid=os.getpid(),
    cpus=sorted(os.sched_getaffinity(0)),
    module=__name__,
    unbuffered="-u" in sys.orig_argv,
)
print(json.dumps(report), flush=True)
