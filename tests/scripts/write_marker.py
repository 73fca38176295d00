"""Creates the file named by argv[1], then prints to stdout and stderr as any script does."""

import pathlib
import sys

pathlib.Path(sys.argv[1]).write_text("ran")
print("to stdout")
print("to stderr", file=sys.stderr)
