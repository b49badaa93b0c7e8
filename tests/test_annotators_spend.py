"""Money and failure against the local HTTP server: what a run spent (price_spent, the ledger), what it would
spend (--estimate), a budget (--max-cost), exit codes whatever the run's size, fail-fast on unreachable
servers, warnings about empty and over-long outputs, and a DataFrame in annotate_frame."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from fake_llm_server import FakeLLMServer, count_tokens

from farm.annotators import AnnotationRun, annotate_frame, annotate_pairs, load_annotator
from farm.annotators.ledger import estimate_tokens, ledger_path, summarize
from farm.errors import FarmError
from farm.io import read_records, write_pairs
from farm.types import Pair

KEY = "sk-spend-PLANTED-24682468"
PRICES = {"price_per_1k_input": 0.3, "price_per_1k_output": 1.1}
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}


def make_pairs(n: int, tag: str = "spend") -> list[Pair]:
    return [Pair(f"{tag}-{i:03d}: shorten", "x" * (3 + 2 * (i % 4)), "y" * (2 + 2 * (i * 3 % 5))) for i in range(n)]


def dollars(requests) -> float:
    """What the server billed for these requests (its own token counts)."""
    return sum(0.3 * count_tokens(r.prompt) + 1.1 * count_tokens(r.answer) for r in requests) / 1000


@pytest.fixture
def server(monkeypatch):
    with FakeLLMServer() as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.openai_base_url)
        yield s


def judge(**overrides):
    return load_annotator("gpt4o_mini_basic", **{**FAST, **PRICES, **overrides})


def test_price_spent_is_what_this_run_paid(server, tmp_path):
    pairs = make_pairs(6)
    with_dups = pairs + pairs[:2]  # two duplicates in the same call: judged once, paid once
    cache = tmp_path / "c.sqlite"
    run = AnnotationRun()
    anns = annotate_pairs(with_dups, judge(), cache_path=cache, run=run, progress=False)
    assert len(server.requests) == 6
    billed = dollars(server.requests)
    assert run.cost == pytest.approx(billed, rel=1e-12)
    assert sum(a.price_spent for a in anns) == pytest.approx(billed, rel=1e-12)
    assert [a.price_spent for a in anns[6:]] == [0.0, 0.0] and all(a.price_spent > 0 for a in anns[:6])
    assert [a.price for a in anns[6:]] == [a.price for a in anns[:2]]  # the verdict's own price stays
    # a re-run: every verdict from the cache, nothing spent, the original prices kept
    again = annotate_pairs(with_dups, judge(), cache_path=cache, progress=False)
    assert len(server.requests) == 6
    assert [a.price_spent for a in again] == [0.0] * 8
    assert [a.price for a in again] == pytest.approx([a.price for a in anns])
    rec = again[0].to_record()
    assert rec["price_spent"] == 0.0 and rec["price_per_example"] > 0
    # the ledger beside the cache holds exactly what was billed
    spend = summarize(ledger_path(cache))
    assert (spend.requests, spend.answered, spend.unknown) == (6, 6, 0)
    assert spend.cost == pytest.approx(billed, rel=1e-12)


def test_the_ledger_keeps_timed_out_requests_and_billed_answers_without_choices(server, tmp_path):
    """A request that times out may still be completed (and billed) by the server: the ledger counts it as
    unknown spend, bounded by its estimated price; an answer without choices but with usage is billed."""
    pairs = make_pairs(4)
    faults = iter([("slow", 1.0), "empty_choices"])
    server.fault_rule = lambda i, body: next(faults, None)
    cache = tmp_path / "c.sqlite"
    run = AnnotationRun()
    anns = annotate_pairs(pairs, judge(timeout=0.4, concurrency=1), cache_path=cache, run=run, progress=False)
    assert all(a.preference is not None for a in anns)
    time.sleep(0.8)  # let the server finish the request the client gave up on
    spend = summarize(ledger_path(cache))
    assert spend.requests == len(server.requests) == 6 and spend.unknown == 1
    assert spend.unknown_cost_max > 0
    received = [r for r in server.requests if r.fault != ("slow", 1.0)]  # the client read these answers
    assert spend.cost == pytest.approx(dollars(received), rel=1e-12) == pytest.approx(run.cost, rel=1e-12)
    assert sum(a.price_spent for a in anns) == pytest.approx(run.cost, rel=1e-12)


def test_estimate_sends_nothing_and_counts_uncached_prompts(server, tmp_path):
    pairs = make_pairs(10)
    cache = tmp_path / "c.sqlite"
    annotate_pairs(pairs[:4], judge(), cache_path=cache, progress=False)
    n = len(server.requests)
    run = AnnotationRun()
    anns = annotate_pairs(pairs, judge(), cache_path=cache, run=run, progress=False, estimate_only=True)
    assert len(server.requests) == n  # nothing sent
    assert run.cache_hits == 4 and run.estimated_requests == 6 and run.requests == 0
    assert all(a.preference is None for a in anns[4:]) and all(a.preference is not None for a in anns[:4])
    j = judge()
    expected_in = sum(estimate_tokens((j.base.template.system or "") + j.base.template.render([p]))
                      for p in (pp.swapped() if a.meta.get("swapped") else pp for pp, a in zip(pairs[4:], anns[4:])))
    assert run.estimated_input_tokens == expected_in
    assert run.estimated_output_tokens == 6 * j.base.config.max_tokens
    assert run.estimated_cost == pytest.approx((0.3 * expected_in + 1.1 * run.estimated_output_tokens) / 1000)
    # the estimate is of the right size: within 2x of what the server then bills for the same prompts
    annotate_pairs(pairs, judge(), cache_path=cache, progress=False)
    billed_in = sum(count_tokens(r.prompt) for r in server.requests[n:])
    assert 0.5 < expected_in / billed_in < 2.0


def test_max_cost_stops_cleanly_and_a_rerun_resumes(server, tmp_path):
    pairs = make_pairs(12)
    cache = tmp_path / "c.sqlite"
    base = judge().base  # the loaded judge is wrapped in its random swap; the LLM judge is inside
    one = base._price(estimate_tokens(base.template.render([pairs[0]])), base.config.max_tokens)
    cap = 4.5 * one
    run = AnnotationRun()
    with pytest.raises(FarmError, match="budget") as e:
        annotate_pairs(pairs, judge(concurrency=1), cache_path=cache, run=run, progress=False, max_cost=cap)
    assert "--max-cost" in str(e.value)
    asked = len(server.requests)
    assert 1 <= asked < 12 and run.cost <= cap  # stopped before passing the cap
    from farm.annotators.cache import VerdictCache

    with VerdictCache(cache) as c:
        assert c.count() == asked  # everything finished is cached
    anns = annotate_pairs(pairs, judge(), cache_path=cache, progress=False)  # no cap: the rest
    assert len(server.requests) == 12 and all(a.preference is not None for a in anns)


def farm_annotate(server: FakeLLMServer, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.openai_base_url}
    return subprocess.run([sys.executable, "-m", "farm", "annotate", "--pairs", str(tmp_path / "pairs.jsonl"),
                           "--annotator", "gpt4o_mini_basic", "--no-progress", "backoff_base=0.01",
                           "max_retries=1", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("n_pairs", [1, 3, 30])
def test_exit_code_when_every_request_fails_whatever_the_size(server, tmp_path, n_pairs):
    write_pairs(tmp_path / "pairs.jsonl", make_pairs(n_pairs))
    server.fault_rule = lambda i, body: "500"
    r = farm_annotate(server, tmp_path, "--out", str(tmp_path / "a.jsonl"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "failed" in r.stderr and server.openai_base_url in r.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_partial_failure_exits_0_with_a_count_and_1_with_strict(server, tmp_path):
    write_pairs(tmp_path / "pairs.jsonl", make_pairs(5))
    server.fault_rule = lambda i, body: "400" if "spend-002" in json.dumps(body) else None
    r = farm_annotate(server, tmp_path, "--out", str(tmp_path / "a.jsonl"), "--no-cache")
    assert r.returncode == 0 and "1 of 5 pairs have no verdict" in r.stderr
    assert sum(x["p_output_2"] is None for x in read_records(tmp_path / "a.jsonl")) == 1
    strict = farm_annotate(server, tmp_path, "--out", str(tmp_path / "b.jsonl"), "--no-cache", "--strict")
    assert strict.returncode == 1 and (tmp_path / "b.jsonl").exists()
    server.fault_rule = None
    clean = farm_annotate(server, tmp_path, "--out", str(tmp_path / "c.jsonl"), "--no-cache", "--strict")
    assert clean.returncode == 0 and "no verdict" not in clean.stderr


def test_cli_estimate_and_spend_report(server, tmp_path):
    write_pairs(tmp_path / "pairs.jsonl", make_pairs(5))
    est = farm_annotate(server, tmp_path, "--out", str(tmp_path / "a.jsonl"), "--estimate",
                        "price_per_1k_input=0.3")
    assert est.returncode == 0 and "estimate: 5 pairs" in est.stdout and "5 requests" in est.stdout
    assert server.requests == [] and not (tmp_path / "a.jsonl").exists()
    ok = farm_annotate(server, tmp_path, "--out", str(tmp_path / "a.jsonl"), "price_per_1k_input=0.3")
    assert ok.returncode == 0
    rep = subprocess.run([sys.executable, "-m", "farm", "annotate", "--spend",
                          str(tmp_path / "annotation_cache.sqlite")], capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0 and "5 answered" in rep.stdout and "1 runs" in rep.stdout


def dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("url", [dead_url(), "http://farm-no-such-host.invalid/v1"], ids=["refused", "dns"])
def test_an_unreachable_server_fails_in_seconds_naming_the_url(tmp_path, url, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    start = time.perf_counter()
    with pytest.raises(FarmError, match="cannot reach") as e:
        annotate_pairs(make_pairs(20), judge(base_url=url, backoff_base=1.0), progress=False)
    assert time.perf_counter() - start < 8  # no backoff: the default would wait ~60 s
    assert url.rstrip("/") in str(e.value) and ("refused" in str(e.value) or "not found" in str(e.value))


def test_a_server_that_restarts_mid_run_is_retried(server, tmp_path):
    """Connection refused after the endpoint answered once is transient (a restarting server): retried."""
    import openai

    from farm.annotators.backends import classify_error

    e = openai.APIConnectionError(request=None)
    e.__cause__ = ConnectionRefusedError(111, "refused")
    assert isinstance(classify_error(e, openai, "", answered=False), FarmError)
    from farm.annotators.retry import TransientError

    assert isinstance(classify_error(e, openai, "", answered=True), TransientError)


def test_empty_and_overlong_outputs_are_reported_and_cut(server, capfd):
    pairs = [Pair("warn-0", "", "fine"), Pair("warn-1", "y" * 5000, "ok"), Pair("warn-2", "a", "b")]
    run = AnnotationRun()
    annotate_pairs(pairs, judge(max_output_chars=1000), run=run, progress=False)
    err = capfd.readouterr().err
    assert "1 empty outputs" in err and "1 outputs longer than 1,000 characters cut" in err
    assert run.empty_outputs == 1 and run.truncated_outputs == 1
    shown = next(r.prompt for r in server.requests if "warn-1" in r.prompt)
    assert "y" * 1000 in shown and "y" * 1001 not in shown and "4000 more characters not shown" in shown


def test_annotate_frame_takes_a_dataframe(server):
    import pandas as pd

    pairs = make_pairs(4)
    df = pd.DataFrame([p.to_record() for p in pairs]).drop(columns=["input"])
    out = annotate_frame(df, judge(), progress=False)
    assert list(out.instruction) == [p.instruction for p in pairs]
    assert list(out.p_output_2) == [float(len(p.output_2) > len(p.output_1)) for p in pairs]
    assert out.attrs["run"]["requests"] == 4 and "price_spent" in out.columns
    with pytest.raises(FarmError, match="<DataFrame>:2: field 'output_2'"):
        annotate_frame(pd.DataFrame([pairs[0].to_record(), {"instruction": "x", "output_1": "a"}]), judge())
