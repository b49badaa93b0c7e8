"""docs/methods/*.md cite code by name, never by line number, and every name they cite exists where they say.

Two forms are checked: a dotted `module.name` whose module is a file of farm/methods/ (or `farm.methods.module`),
and `name` followed by the file that holds it, as in (`name`, module.py) or `name` (module.py), for any module
of farm/. A dotted config key (`reward.judge`, `train.lr`, `ppo.steps`) counts when it names a field."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs" / "methods").glob("*.md"))
DOTTED = re.compile(r"`(?:farm\.methods\.)?([a-z_]+)\.([A-Za-z_]\w*)")
NAMED_IN = re.compile(r"`([A-Za-z_]\w*)`\)?,? \(?(?:farm/(?:\w+/)*)?([a-z_]+)\.py")
GONE = ("common",)  # modules that no longer exist (split into the floor: data, scorers, loop, rollout, pairs)


def module_of(stem: str) -> str | None:
    """The dotted module of the farm/ file named `stem`.py (farm/methods/ first), or None."""
    if (ROOT / "farm" / "methods" / f"{stem}.py").exists():
        return f"farm.methods.{stem}"
    hits = sorted((ROOT / "farm").rglob(f"{stem}.py"))
    return ".".join(hits[0].relative_to(ROOT).with_suffix("").parts) if hits else None


def config_block_fields(block: str) -> set[str]:
    from farm.methods.loop import TrainConfig
    from farm.methods.ppo import Config as PPOConfig
    from farm.methods.scorers import RewardSpec

    cls = {"train": TrainConfig, "reward": RewardSpec, "ppo": PPOConfig}.get(block)
    return {f.name for f in dataclasses.fields(cls)} if cls else set()


def references(text: str) -> list[tuple[str, str]]:
    """(module file stem, name) pairs a page cites (dotted ones only for farm/methods/ modules).

    >>> references("`dpo.LOSSES`, (`fit`, loop.py), `quality` (harm.py), `harm.quality`")
    [('dpo', 'LOSSES'), ('loop', 'fit'), ('harm', 'quality')]
    """
    out = [(m, n) for m, n in DOTTED.findall(text) if (ROOT / "farm" / "methods" / f"{m}.py").exists()]
    return out + [(m, n) for n, m in NAMED_IN.findall(text)]


def missing(text: str) -> list[str]:
    bad = []
    for stem, name in references(text):
        mod = module_of(stem)
        if mod is None:
            bad.append(f"{stem}.py (no such file)")
        elif not hasattr(importlib.import_module(mod), name):
            if name not in config_block_fields(stem):
                bad.append(f"{stem}.{name}")
        elif getattr(getattr(importlib.import_module(mod), name), "__module__", mod) != mod:  # imported, not defined
            bad.append(f"{stem}.{name} (defined in {getattr(importlib.import_module(mod), name).__module__})")
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_method_docs_cite_names_that_exist_and_no_line_numbers(doc):
    text = doc.read_text(encoding="utf-8")
    assert not re.findall(r"\w\.py:\d+|line ~\d+", text), "cite a name, not a line number"
    assert not [g for g in GONE if f"{g}.py" in text or f"`{g}." in text], "a module that no longer exists"
    assert not missing(text), f"{doc.name} cites names that do not exist there: {missing(text)}"
