"""Rank 1 (or FAIL_RANK) raises ZeroDivisionError after a moment; the others wait to be stopped (or OTHERS_WAIT s)."""

import os
import time

print(f"ready {os.environ['RANK']}", flush=True)
if os.environ["RANK"] == os.environ.get("FAIL_RANK", "1"):
    time.sleep(0.5)
    print(1 / 0)
time.sleep(float(os.environ.get("OTHERS_WAIT", "120")))
