"""The least a rank run in process can cost: the floor row under ``run_mode=inprocess`` in bench/startup.py.

    python bench/inprocess_floor.py [--no-run] PLAN

What any in-process start with ds-helper's guarantees has to do beyond a bare ``python SCRIPT``, and nothing else:
read the JSON plan with CPython's C scanner (no checks at all), arm kill-with-parent with ``prctl`` through ctypes'
C core (as rank/inherit.py does), freeze the objects of the start out of the script's collections (as
rank/inprocess.py does), then compile the script the plan names and run it as ``__main__``. The first ``compile``
in a process builds the ``ast`` module's types (about 1 ms here), which a bare ``python SCRIPT`` never does; a
script that imports ``ast``, ``inspect`` or ``dataclasses`` (torch does) pays it anyway. With ``--no-run`` it stops
before compiling (for peak RSS).
"""

import _ctypes
import gc
import sys
from _json import make_scanner

PR_SET_PDEATHSIG, SIGKILL = 1, 9


class _JsonSettings:
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int, parse_constant = float, int, float


class _Prctl(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL


class _Process:
    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)


def main() -> None:
    with open(sys.argv[-1], encoding="utf-8") as handle:
        text = handle.read()
    plan = make_scanner(_JsonSettings())(text, 0)[0]["plan"]
    _Prctl(("prctl", _Process))(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if sys.argv[1] == "--no-run":
        return
    path = plan["command"]["target"]
    with open(path, "rb") as handle:
        code = compile(handle.read(), path, "exec", dont_inherit=True)
    gc.freeze()
    script = type(sys)("__main__")
    script.__file__ = path
    sys.modules["__main__"] = script
    sys.argv = [path, *plan["args"]]
    exec(code, script.__dict__)


if __name__ == "__main__":
    main()
