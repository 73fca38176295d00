"""The README's tables of managers, binding options and shipped recipes, generated from the files they describe.

    python docs/tables.py           # rewrite the generated parts of README.md
    python docs/tables.py --check   # exit 1 when README.md is stale (tests/test_docs.py runs this check)

Each table sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in README.md; everything else
in the README is written by hand. Sources: conf/launcher/*.yaml, conf/bind/*.yaml with the ``bind`` keys' help
in launcher/ds_helper/compose/schema.py, and recipes/*.yaml.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RANK_FIELDS = ("rank", "local_rank", "world_size", "local_world_size", "node_rank")


def _options(folder: Path) -> Dict[str, Dict[str, Any]]:
    return {path.stem: yaml.safe_load(path.read_text()) or {} for path in sorted(folder.glob("*.yaml"))}


def _code(words: List[str]) -> str:
    return f"`{' '.join(words)}`" if words else ""


def _recognised_by(data: Dict[str, Any]) -> str:
    if not data.get("detect"):
        return "fallback: no manager's variables" if data.get("fixed") else ""
    text = " + ".join(f"`{name}`" for name in data["detect"])
    if data.get("exclude"):
        text += ", no " + " ".join(f"`{name}`" for name in data["exclude"])
    return f"{text} ({data.get('priority', 0)})"


def _sources(data: Dict[str, Any], field: str) -> str:
    fixed = data.get("fixed", {})
    return _code(data.get(field, [])) or (str(fixed[field]) if field in fixed else "-")


def _first_host(data: Dict[str, Any]) -> str:
    described = []
    for host in data.get("hosts", []):
        where = {"lines": "line", "words": "word"}.get(host.get("format", "hostlist"), "entry")
        ordinal = f"{where} {host.get('skip', 0) + 1}" if host.get("skip") else f"first {where}"
        described.append(f"{ordinal} of `{host['var']}`" + (" (a file)" if host.get("file") else ""))
    return ", then ".join(described) or "-"


def managers() -> str:
    """One row per launcher file, in the order launcher=auto tries them, the fallback last."""
    options = [data for name, data in _options(ROOT / "conf" / "launcher").items() if name != "auto"]
    options.sort(key=lambda data: (not data.get("detect"), -data.get("priority", 0)))
    header = ["launcher", "recognised by (priority)", "rank", "local rank", "world size", "local size", "node rank"]
    rows = [header + ["first host (MASTER_ADDR)"], ["---"] * (len(header) + 1)]
    for data in options:
        cells = [f"`{data['name']}`", _recognised_by(data), *(_sources(data, f) for f in RANK_FIELDS)]
        rows.append(cells + [_first_host(data)])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def binding() -> str:
    """The bind group's options (their descriptions) and keys (their help in the schema)."""
    sys.path.insert(0, str(ROOT / "launcher"))
    from ds_helper.compose.schema import key_help

    rows = ["| option / key | meaning |", "|---|---|"]
    for name, data in _options(ROOT / "conf" / "bind").items():
        rows.append(f"| `bind={name}` | {data.get('description', '')} |")
    for key, text in key_help().items():
        if key.startswith("bind.") and key not in ("bind.description", "bind.policy"):  # the options set policy
            rows.append(f"| `{key}` | {text} |")
    return "\n".join(rows)


def recipes() -> str:
    rows = ["| recipe | for |", "|---|---|"]
    for name, data in _options(ROOT / "recipes").items():
        rows.append(f"| `{name}` | {data.get('description', '')} |")
    return "\n".join(rows)


TABLES: Dict[str, Callable[[], str]] = {"managers": managers, "binding": binding, "recipes": recipes}


def render(text: str) -> str:
    """``text`` with every generated table replaced by its current version."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no '<!-- generated: {name} -->' ... '<!-- end: {name} -->' block")
        table = make()
        text = pattern.sub(lambda match, table=table: match.group(1) + table + "\n" + match.group(2), text)
    return text


def main(argv: List[str]) -> int:
    current = README.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md is stale: run python docs/tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
