"""Fault injection for the annotation pipeline: many faults at once, against the local HTTP server.

tests/test_annotators_http.py covers each fault alone (two in a row, then success). Here a seeded fraction of all
requests fail with a random mix of every fault the server knows, on several backends and prompt shapes at once,
with a cache; and two processes annotate into one cache at the same time. What must hold:
- the run finishes and every pair gets exactly one annotation, in order: the right verdict, or invalid with the
  judge's raw text / the error (never a guess);
- cost accounting is exact: tokens equal the sum of the usage of the responses the client accepted, dollars follow
  from them, and the per-pair prices add up to the run's cost;
- the cache holds one row per judged pair, and a re-run asks only for the pairs that failed for good.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys

import pytest
from fake_llm_server import FakeLLMServer, count_tokens

from farm.annotators import AnnotationRun, annotate_pairs, load_annotator
from farm.io import read_records, write_pairs
from farm.types import Pair

KEY = "sk-faults-PLANTED-1234567890"
TIMEOUT = 0.6  # the client's timeout: a ("slow", 1.5) fault is a timeout, ("slow", 0.2) only slow
FAULTS = ["429", ("429", {"Retry-After": "0.05"}), ("429", {"retry-after-ms": "30"}), "500", "502", "503", "529",
          "reset", "malformed", "truncated", "empty_choices", "no_usage", ("garbage", "Both are fine, really."),
          ("slow", 0.2), ("slow", 1.5)]


def make_pairs(n: int, tag: str) -> list[Pair]:
    return [Pair(f"{tag}-{i:03d}: improve the text", "x" * (3 + 2 * (i % 4)), "y" * (2 + 2 * (i * 3 % 5)))
            for i in range(n)]


def longer(p: Pair) -> float:
    return float(len(p.output_2) > len(p.output_1))


def accepted(r) -> bool:
    """Did the client receive a response with usage for this request (billed, even when it held no choices)?"""
    name = r.fault[0] if isinstance(r.fault, tuple) else r.fault
    if name == "slow":
        return r.fault[1] < TIMEOUT
    return name in (None, "garbage", "empty_choices")


@pytest.fixture
def server(monkeypatch):
    with FakeLLMServer() as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.openai_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", s.anthropic_base_url)
        yield s


def mixed_faults(rate: float, seed: int, faults: list = FAULTS):
    rng = random.Random(seed)
    return lambda index, body: rng.choice(faults) if rng.random() < rate else None


@pytest.mark.parametrize("name,seed", [("gpt4o_mini_basic", 0), ("claude_haiku_cot", 1), ("gpt4o_mini_batch5", 2)])
def test_mixed_fault_run_finishes_exactly_once_with_exact_cost(server, tmp_path, name, seed):
    n = 100 if name.endswith("batch5") else 30  # about 30 requests either way
    pairs = make_pairs(n, name)
    server.fault_rule = mixed_faults(0.4, seed)
    judge = load_annotator(name, backoff_base=0.01, backoff_max=0.1, timeout=TIMEOUT, max_retries=4,
                           max_parse_retries=1, concurrency=6, price_per_1k_input=0.3, price_per_1k_output=1.1)
    cache, run = tmp_path / "cache.sqlite", AnnotationRun()
    anns = annotate_pairs(pairs, judge, cache_path=cache, run=run, progress=False)

    assert [a.pair for a in anns] == pairs  # one annotation per pair, in order
    faults = [r.fault for r in server.requests if r.fault is not None]
    assert len(faults) >= 6 and len({str(f) for f in faults}) >= 5  # the run really was hit by a mix
    print(f"\n{name}: {len(faults)} faults injected in {len(server.requests)} requests "
          f"({len({str(f) for f in faults})} kinds)")
    valid = [a for a in anns if a.preference is not None]
    invalid = [a for a in anns if a.preference is None]
    assert [a.preference for a in valid] == [longer(a.pair) for a in valid]  # never a wrong verdict
    assert all(a.raw for a in invalid)  # invalid always keeps the judge's text or the error
    assert len(valid) >= 0.6 * n
    assert run.invalid == len(invalid) and run.pairs == n and run.requests == len(server.requests)

    # cost: exactly the usage of the accepted responses (a no_usage response reports none)
    ok = [r for r in server.requests if accepted(r)]
    n_in, n_out = sum(count_tokens(r.prompt) for r in ok), sum(count_tokens(r.answer) for r in ok)
    assert (run.input_tokens, run.output_tokens) == (n_in, n_out)
    assert run.cost == pytest.approx((0.3 * n_in + 1.1 * n_out) / 1000, rel=1e-12)
    assert sum(a.price for a in anns) == pytest.approx(run.cost, rel=1e-9)  # a first run: price = spent
    assert sum(a.price_spent for a in anns) == pytest.approx(run.cost, rel=1e-9)

    # the cache: one row per pair that got an answer; failed requests are not cached and are asked again
    failed = [a for a in anns if "error" in a.meta]
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT judge, pair_key, COUNT(*) FROM verdicts GROUP BY judge, pair_key").fetchall()
    assert len(rows) == n - len(failed) and all(n == 1 for *_, n in rows)
    server.fault_rule, n = None, len(server.requests)
    again = annotate_pairs(pairs, judge, cache_path=cache, progress=False)
    asked = len(server.requests) - n
    assert asked <= len(failed) and (asked == 0) == (not failed)
    assert [a.preference for a in again if a.pair not in {f.pair for f in failed}] == \
        [a.preference for a in anns if a.pair not in {f.pair for f in failed}]  # cached verdicts unchanged


def test_a_server_that_always_fails_stops_the_run_with_the_error(server):
    """Every request failing is an error whatever the run's size (here fewer pairs than concurrency + 2)."""
    from farm.errors import FarmError

    server.fault_rule = lambda i, body: random.Random(i).choice(["500", "reset", "malformed", "truncated"])
    run = AnnotationRun()
    with pytest.raises(FarmError, match="every request failed") as e:
        annotate_pairs(make_pairs(5, "down"), load_annotator("gpt4o_mini_basic", backoff_base=0.001,
                                                             backoff_max=0.01, max_retries=3),
                       run=run, progress=False)
    assert server.openai_base_url in str(e.value)
    assert run.requests == 5 * 4 and run.failed == 5 and run.cost == 0 and run.input_tokens == 0


def test_partial_failure_gives_invalid_pairs_with_the_error(server):
    server.fault_rule = lambda i, body: "500" if "down-001" in json.dumps(body) else None
    run = AnnotationRun()
    anns = annotate_pairs(make_pairs(4, "down"), load_annotator("gpt4o_mini_basic", backoff_base=0.001,
                                                                backoff_max=0.01, max_retries=2),
                          run=run, progress=False)
    bad = [a for a in anns if a.preference is None]
    assert [a.pair.instruction[:8] for a in bad] == ["down-001"] and bad[0].raw.startswith("[request failed]")
    assert run.failed == 1 and run.invalid == 1


def _annotate_proc(server: FakeLLMServer, pairs_file, out, cache, key: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": key, "OPENAI_BASE_URL": server.openai_base_url}
    return subprocess.Popen([sys.executable, "-m", "farm", "annotate", "--pairs", str(pairs_file), "--annotator",
                             "gpt4o_mini_basic", "--out", str(out), "--cache", str(cache), "--concurrency", "3",
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_share_one_cache_without_corruption_or_duplicates(tmp_path):
    pairs = make_pairs(60, "shared")
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    cache = tmp_path / "cache.sqlite"
    with FakeLLMServer(latency=0.02) as server:
        # transport faults only: each is retried, so every pair ends valid in both processes
        server.fault_rule = mixed_faults(0.15, seed=7, faults=["429", "500", "503", "reset", "malformed"])
        keys = ["sk-proc-A-PLANTED-11111111", "sk-proc-B-PLANTED-22222222"]
        procs = [_annotate_proc(server, tmp_path / "pairs.jsonl", tmp_path / f"out{k}.jsonl", cache, key)
                 for k, key in enumerate(keys)]
        results = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), results
    outs = [read_records(tmp_path / f"out{k}.jsonl") for k in range(2)]
    truth = [longer(p) for p in pairs]
    assert [r["p_output_2"] for r in outs[0]] == [r["p_output_2"] for r in outs[1]] == truth
    # per process, each pair's verdict was asked for at most once (retries of a failed attempt aside)
    for key in keys:
        answered = [r for r in server.requests if r.headers["authorization"] == f"Bearer {key}"
                    and r.fault is None]
        asked = [next(p.instruction for p in pairs if p.instruction in r.prompt) for r in answered]
        assert len(asked) == len(set(asked))
    answered_all = [r for r in server.requests if r.fault is None]
    assert 60 <= len(answered_all) <= 120  # the second process reused at least nothing, at most all
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT judge || pair_key) FROM verdicts").fetchone() == (60, 60)
