"""Rank FAIL_RANK exits with FAIL_CODE (or dies by signal FAIL_SIGNAL); every other rank waits for SIGTERM."""

import os
import signal
import sys
import time


def handler(signum, frame):
    with open(os.path.join(os.environ["SIGNAL_DIR"], os.environ["RANK"]), "w") as record:
        record.write(f"got signal {signum}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, handler)
print(f"ready {os.environ['RANK']}", flush=True)
if os.environ["RANK"] == os.environ.get("FAIL_RANK"):
    time.sleep(1)
    if os.environ.get("FAIL_SIGNAL"):
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ["FAIL_SIGNAL"]))
    sys.exit(int(os.environ["FAIL_CODE"]))
time.sleep(120)
