"""Exits with the code given as its first argument."""

import sys

sys.exit(int(sys.argv[1]))
