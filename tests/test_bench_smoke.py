"""The farm side of each farm-vs-TRL bench runs on the current code (a bench that can no longer run is a stale
RESULTS.md waiting to happen: the DPO bench once called a function a refactor had removed). Two steps on a tiny
model each; the TRL side and the timings are the benches' business, not the tests'."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

import pytest

from farm.models.tiny import TinySpec, build_tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    bench = importlib.import_module("bench.bench_rloo_trl")
    texts = bench.make_prompts(16) + [" ".join("0123456789")] * 4
    return str(build_tiny(texts, tmp_path_factory.mktemp("bench") / "tiny",
                          TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0))


def _finite_history(values) -> bool:
    return len(values) == 2 and all(math.isfinite(v) for v in values)


def test_dpo_bench_runs(tiny):
    b = importlib.import_module("bench.bench_dpo_trl")
    out = b.run_ours(tiny, b.make_pairs(4), steps=2)
    assert _finite_history(out["losses"]) and out["steps_per_s"] > 0
    assert out["losses"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 1


def test_kto_bench_runs(tiny):
    b = importlib.import_module("bench.bench_kto_trl")
    out = b.run_ours(tiny, b.make_answers(8), steps=2)
    assert out["steps_per_s"] > 0 and len(out["losses"]) == 2


def test_rloo_bench_runs(tiny):
    b = importlib.import_module("bench.bench_rloo_trl")
    a = argparse.Namespace(steps=2, prompts=2, new_tokens=6, lr=1e-3)
    out = b.run_ours(tiny, b.make_prompts(8), a)
    assert _finite_history(out["rewards"]) and set(out["split"]) >= {"time_generation", "time_update"}


def test_grpo_bench_runs(tiny):
    b = importlib.import_module("bench.bench_grpo_trl")
    out = b.run_ours(tiny, importlib.import_module("bench.bench_rloo_trl").make_prompts(8), 2, per_step=2,
                     new_tokens=6)
    assert _finite_history(out["rewards"]) and out["steps_per_s"] > 0
