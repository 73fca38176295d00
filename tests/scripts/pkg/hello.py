"""Run as a module (module=true): reports its module name and arguments."""

import json
import os
import sys

print(json.dumps({"module": __name__, "argv": sys.argv[1:], "RANK": os.environ.get("RANK")}), flush=True)
