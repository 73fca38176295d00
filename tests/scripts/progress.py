"""A progress bar: writes without a newline, then waits for stdin to close before finishing the line."""

import sys

sys.stdout.write("\rstep 1/2")
sys.stdout.flush()
sys.stdin.read()
sys.stdout.write("\rstep 2/2\n")
