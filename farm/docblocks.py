"""Numbers in README.md, docs/ and bench/RESULTS.md are written by commands, never by hand.

A measured figure lives between two markers, and the opening marker says where it comes from:

    <!-- farm:begin NAME from=bench/results/dpo_trl.json render=bench.bench_dpo_trl:markdown -->
    ...text written by render(json.load(from))...
    <!-- farm:end NAME -->

The command that measures (a bench script, `farm report RUN --write-docs`) saves its numbers to the `from` file and
calls `write_block`, which re-renders the block in place. `tests/test_docblocks.py` re-renders every block of every
document from its `from` file and checks the text is identical: a hand edit, or a JSON re-measured without
re-rendering, fails the suite. The renderer is a pure function `render(data: dict) -> str` of the JSON.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from farm.errors import FarmError

ROOT = Path(__file__).resolve().parent.parent  # the repository (for `from=` paths, relative to it)
_BEGIN = re.compile(r"^<!-- farm:begin (?P<name>[\w.-]+) from=(?P<src>\S+) render=(?P<render>[\w.]+:\w+) -->$",
                    re.M)
DOCUMENTS = ("README.md", "docs", "bench/RESULTS.md")


@dataclass(frozen=True)
class Block:
    name: str
    source: str
    """the JSON file the numbers come from, relative to the repository root"""
    render: str
    """module:function that turns that JSON into the block's text"""
    text: str
    """what the document holds between the markers (without them)"""
    line: int
    """line of the opening marker (1-based)"""


def blocks(path: str | Path) -> list[Block]:
    """Every generated block of one markdown document, in order."""
    path = Path(path)
    doc = path.read_text(encoding="utf-8")
    out = []
    for m in _BEGIN.finditer(doc):
        end = f"\n<!-- farm:end {m['name']} -->"
        j = doc.find(end, m.end())
        line = doc.count("\n", 0, m.start()) + 1
        if j < 0:
            raise FarmError(f"block '{m['name']}' has no end marker", file=path, line=line,
                            hint=f"add '<!-- farm:end {m['name']} -->'")
        out.append(Block(m["name"], m["src"], m["render"], doc[m.end() + 1:j], line))
    return out


def renderer(spec: str) -> Callable[[dict], str]:
    """'module:function' → the function (bench scripts import as `bench.<name>` from the repository root)."""
    mod, fn = spec.split(":")
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return getattr(importlib.import_module(mod), fn)


def render_block(block: Block, root: str | Path = ROOT) -> str:
    data = json.loads((Path(root) / block.source).read_text(encoding="utf-8"))
    return renderer(block.render)(data).rstrip("\n")


def write_block(doc: str | Path, name: str, data: dict[str, Any], source: str, render: str) -> Path:
    """Save `data` to `source` (relative to the repository root) and re-render block `name` of `doc` from it.
    A block that does not exist yet is appended at the end of the document."""
    from farm.io import atomic_write_text

    doc = Path(doc)
    src = ROOT / source
    src.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(src, json.dumps(data, indent=1, sort_keys=True, default=_plain) + "\n")
    text = renderer(render)(json.loads(src.read_text(encoding="utf-8"))).rstrip("\n")
    begin = f"<!-- farm:begin {name} from={source} render={render} -->"
    end = f"<!-- farm:end {name} -->"
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    pattern = re.compile(rf"^<!-- farm:begin {re.escape(name)} .*?-->\n.*?^{re.escape(end)}$", re.M | re.S)
    new_block = f"{begin}\n{text}\n{end}"
    if pattern.search(old):
        new = pattern.sub(lambda _: new_block, old, count=1)
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + new_block + "\n"
    atomic_write_text(doc, new)
    return doc


def stale(root: str | Path = ROOT) -> list[str]:
    """'file:line name: why' for every block whose text is not what its renderer makes of its JSON."""
    root = Path(root)
    out = []
    for doc in documents(root):
        for b in blocks(doc):
            try:
                want = render_block(b, root)
            except FileNotFoundError:
                out.append(f"{doc.relative_to(root)}:{b.line} {b.name}: source {b.source} is missing")
                continue
            if want != b.text.rstrip("\n"):
                out.append(f"{doc.relative_to(root)}:{b.line} {b.name}: text differs from {b.render}({b.source})")
    return out


def documents(root: str | Path = ROOT) -> list[Path]:
    root = Path(root)
    out: list[Path] = []
    for d in DOCUMENTS:
        p = root / d
        out += sorted(p.rglob("*.md")) if p.is_dir() else ([p] if p.exists() else [])
    return out


def _plain(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
