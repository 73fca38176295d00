"""Prints its pid, waits for SIGTERM, reports it and exits 7 so the caller can tell the handler ran."""

import os
import signal
import sys
import time


def handler(signum, frame):
    # Also as a file: a manager tearing the job down may drop output still in flight.
    if "SIGNAL_DIR" in os.environ:
        with open(os.path.join(os.environ["SIGNAL_DIR"], str(os.getpid())), "w") as record:
            record.write(f"got signal {signum}\n")
    print(f"got signal {signum}", flush=True)
    sys.exit(7)


signal.signal(signal.SIGTERM, handler)
print(f"ready {os.getpid()}", flush=True)
time.sleep(60)
print("no signal arrived", flush=True)
