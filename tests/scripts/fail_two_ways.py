"""Rank 1 exits with code 3, then rank 2 dies of SIGSEGV; the others wait to be stopped (or OTHERS_WAIT seconds)."""

import os
import signal
import sys
import time

print(f"ready {os.environ['RANK']}", flush=True)
if os.environ["RANK"] == "1":
    time.sleep(0.3)
    sys.exit(3)
if os.environ["RANK"] == "2":
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGSEGV)
time.sleep(float(os.environ.get("OTHERS_WAIT", "120")))
