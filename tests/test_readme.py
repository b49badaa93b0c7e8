"""The README's quickstart table is the output of `farm compare configs/quickstart.yaml`, written by
`farm report runs/quickstart --write-docs` (tests/test_docblocks.py checks the text equals its JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm import docblocks
from farm.config import load_config
from farm.run_config import CompareConfig

REPO = Path(__file__).resolve().parents[1]
MACHINE = ("wall_seconds", "cpu_seconds", "invocations", "torch", "threads", "processor", "cpu_count", "workers",
           "cpu_capability")


def _readme_block():
    (block,) = [b for b in docblocks.blocks(REPO / "README.md") if b.name == "quickstart"]
    return block


def test_readme_table_is_of_the_shipped_quickstart_config():
    block = _readme_block()
    assert block.render == "farm.eval.report_text:readme_table"
    data = json.loads((REPO / block.source).read_text())
    cfg = load_config(CompareConfig, REPO / "configs" / "quickstart.yaml")
    # the recorded run is a run of THIS config: its size and its methods
    assert data["n_prompts"] == cfg.world.sizes["eval"] and data["n_seeds"] == cfg.method_seeds
    assert sorted(r["method"] for r in data["rows"]) == sorted(cfg.methods)
    assert data["wall_seconds"] <= 8 * 60  # configs/quickstart.yaml promises the main job in 5 to 8 minutes on 2 cores
    lines = block.text.splitlines()
    assert lines[0].startswith("| method | simulated human | eval pool | gold | Δ gold vs SFT |")
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == len(cfg.methods)
    for line in rows:  # method | 3 win rates with intervals | 2 paired differences (— for SFT)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 6 and all("[" in c for c in cells[1:4])


@pytest.mark.slow
def test_a_fresh_quickstart_reproduces_the_readme_table(tmp_path):
    import torch

    from farm.eval.report import readme_rows
    from farm.run import compare

    recorded = json.loads((REPO / _readme_block().source).read_text())
    here = torch.backends.cpu.get_cpu_capability()
    if recorded.get("cpu_capability") not in (None, here):  # unrecorded: compare anyway
        pytest.skip(f"the README table was measured with torch's {recorded['cpu_capability']} CPU kernels, this machine "
                    f"has {here}: floats round differently and the quickstart's SFT phase change lands elsewhere "
                    "(docs/compare.md, 'One SFT policy')")
    run = compare(REPO / "configs" / "quickstart.yaml", [f"run_dir={tmp_path / 'quickstart'}", "progress=false"],
                  log=lambda s: None)
    fresh = readme_rows(run.dir)
    for key in MACHINE:
        fresh.pop(key, None)
        recorded.pop(key, None)
    assert json.loads(json.dumps(fresh)) == recorded
