"""Says whether it owns the terminal (foreground process group), then echoes one line read from stdin."""

import os

print(f"foreground {os.tcgetpgrp(0) == os.getpgrp()}", flush=True)
print(f"got {input()}", flush=True)
