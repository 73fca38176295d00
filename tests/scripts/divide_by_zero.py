"""Rank 1 raises ZeroDivisionError after a moment; the other ranks wait to be stopped."""

import os
import time

print(f"ready {os.environ['RANK']}", flush=True)
if os.environ["RANK"] == "1":
    time.sleep(0.5)
    print(1 / 0)
time.sleep(120)
