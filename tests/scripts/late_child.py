"""Starts a child that writes after this script has exited, then exits at once."""

import subprocess
import sys

code = "import time; time.sleep(1); print('written late by the child', flush=True)"
subprocess.Popen([sys.executable, "-c", code])
print("parent done", flush=True)
