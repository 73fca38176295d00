"""Prints, as one JSON line, what `python SCRIPT` gives a script's __main__ (compared with run_mode=inprocess)."""

import json
import sys

loader = globals().get("__loader__")
print(
    json.dumps(
        {
            "argv0": sys.argv[0],
            "builtins": type(__builtins__).__name__,
            "loader": type(loader).__name__,
            "loader_name": getattr(loader, "name", None),
            "loader_path": getattr(loader, "path", None),
            "file": __file__,
            "spec": None if __spec__ is None else [__spec__.name, __spec__.origin],
            "package": __package__,
            "cached": globals().get("__cached__"),
            "doc": __doc__[:20],
            "names": sorted(globals()),
            "path0": sys.path[0],
            "main_is_module": sys.modules["__main__"].__dict__ is globals(),
        }
    ),
    flush=True,
)
