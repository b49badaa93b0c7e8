"""Every generated block in README.md, docs/ and bench/RESULTS.md equals its renderer's output on its JSON."""

from __future__ import annotations

import json

import pytest

from farm import docblocks
from farm.errors import FarmError


def test_every_block_in_the_repository_is_what_its_command_wrote():
    assert docblocks.stale() == []


def _render(data):
    return "| a | b |\n|---|---|\n" + "".join(f"| {k} | {v:.1f} |\n" for k, v in sorted(data.items()))


def test_write_block_replaces_in_place_and_a_hand_edit_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(docblocks, "ROOT", tmp_path)
    doc = tmp_path / "README.md"
    doc.write_text("# title\n\nprose before\n")
    spec = f"{__name__}:_render"
    docblocks.write_block(doc, "t", {"x": 1.0}, "r/t.json", spec)
    docblocks.write_block(doc, "t", {"x": 2.0, "y": 3.0}, "r/t.json", spec)  # re-measured: replaced, not appended
    text = doc.read_text()
    assert text.count("farm:begin t ") == 1 and "| x | 2.0 |" in text and "| x | 1.0 |" not in text
    assert text.startswith("# title\n\nprose before\n")
    assert json.loads((tmp_path / "r/t.json").read_text()) == {"x": 2.0, "y": 3.0}
    assert docblocks.stale(tmp_path) == []
    doc.write_text(text.replace("| x | 2.0 |", "| x | 2.5 |"))  # a hand-copied figure
    (bad,) = docblocks.stale(tmp_path)
    assert bad.startswith("README.md:5 t:")
    doc.write_text(text)
    (tmp_path / "r/t.json").write_text(json.dumps({"x": 9.0, "y": 3.0}))  # measured again, not re-rendered
    assert len(docblocks.stale(tmp_path)) == 1


def test_a_block_without_its_end_marker_names_file_and_line(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("x\n<!-- farm:begin t from=a.json render=m:f -->\n| 1 |\n")
    with pytest.raises(FarmError, match=r"a.md:2: block 't' has no end marker"):
        docblocks.blocks(doc)
