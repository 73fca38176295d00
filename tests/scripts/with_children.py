"""A rank that starts a child, which starts a grandchild (both sleep, with argv[1] in their command lines), then
prints ready. With EXIT_CODE set, rank FAIL_RANK (every rank without FAIL_RANK) exits with it; the others sleep.
With QUIET_CHILDREN set, the child and grandchild do not hold the rank's stdout and stderr."""

import os
import subprocess
import sys
import time

token = sys.argv[1]
sleep = f"import time; time.sleep(300)  # {token}"
grandchild = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleep!r}]); time.sleep(300)"
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if "QUIET_CHILDREN" in os.environ else {}
subprocess.Popen([sys.executable, "-c", grandchild, token], **quiet)
time.sleep(0.5)
rank = os.environ.get("RANK", "0")
print(f"ready {rank}", flush=True)
if "EXIT_CODE" in os.environ and os.environ.get("FAIL_RANK", rank) == rank:
    sys.exit(int(os.environ["EXIT_CODE"]))
time.sleep(300)
