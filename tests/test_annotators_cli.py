"""`farm annotate` end to end in subprocesses: output records, zero requests on a re-run, and a run killed
mid-way that resumes without asking again for the pairs it had finished."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from fake_llm_server import FakeLLMServer

from farm.io import read_records, write_pairs
from farm.types import Pair

KEY = "sk-farm-cli-PLANTED-key-42424242"


def make_pairs(n: int) -> list[Pair]:
    return [Pair(f"item-{i:03d} summarise", "x" * (3 + 2 * (i % 4)), "y" * (2 + 2 * (i * 3 % 5))) for i in range(n)]


def farm_annotate(server: FakeLLMServer, *args: str, wait: bool = True):
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.openai_base_url}
    cmd = [sys.executable, "-m", "farm", "annotate", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def committed(cache) -> int:
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_cli_writes_annotations_and_a_rerun_makes_no_requests(tmp_path):
    pairs = make_pairs(10)
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "out" / "ann.jsonl"
    with FakeLLMServer() as server:
        r = farm_annotate(server, "--pairs", str(tmp_path / "pairs.jsonl"), "--annotator", "gpt4o_mini_cot",
                          "--out", str(out), "--no-progress", "price_per_1k_input=1.0")
        assert r.returncode == 0, r.stderr
        assert "10 requests" in r.stdout and "cost $" in r.stdout
        recs = read_records(out)
        assert [x["instruction"] for x in recs] == [p.instruction for p in pairs]
        assert [x["p_output_2"] for x in recs] == [float(len(p.output_2) > len(p.output_1)) for p in pairs]
        assert [x["preference"] for x in recs] == [1 + x["p_output_2"] for x in recs]
        assert all(x["annotator"] == "gpt4o_mini_cot" and "Verdict:" in x["raw_completion"] for x in recs)
        assert all(x["price_per_example"] > 0 and x["time_per_example"] > 0 for x in recs)
        assert (out.parent / "annotation_cache.sqlite").exists()
        n = len(server.requests)
        r2 = farm_annotate(server, "--pairs", str(tmp_path / "pairs.jsonl"), "--annotator", "gpt4o_mini_cot",
                           "--out", str(out), "--no-progress", "price_per_1k_input=1.0")
        assert r2.returncode == 0 and len(server.requests) == n and "0 requests" in r2.stdout
        assert "10 cache hits" in r2.stdout
        for path in out.parent.iterdir():
            assert KEY.encode() not in path.read_bytes()
        bad = farm_annotate(server, "--pairs", str(tmp_path / "pairs.jsonl"), "--annotator", "gpt4o_mini_cott",
                            "--out", str(out))
        assert bad.returncode == 2 and "did you mean" in bad.stderr


def test_killed_run_resumes_without_repeating_finished_pairs(tmp_path):
    pairs = make_pairs(40)
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    out, cache = tmp_path / "ann.jsonl", tmp_path / "cache.sqlite"
    args = ["--pairs", str(tmp_path / "pairs.jsonl"), "--annotator", "gpt4o_mini_basic", "--out", str(out),
            "--cache", str(cache), "--concurrency", "2", "--no-progress"]
    with FakeLLMServer(latency=0.1) as server:
        proc = farm_annotate(server, *args, wait=False)
        deadline = time.monotonic() + 90
        while committed(cache) < 10:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first run never got going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()  # reaps it and closes its pipes
        assert not out.exists()  # killed before the end: no half-written output
        with sqlite3.connect(cache) as db:
            done_keys = {k for (k,) in db.execute("SELECT pair_key FROM verdicts")}
        instruction_of = {k: p.instruction for p in pairs for k in (p.key(), p.swapped().key())}
        done = {instruction_of[k] for k in done_keys}
        assert 10 <= len(done) < 40
        first_run = len(server.requests)

        r = farm_annotate(server, *args)
        assert r.returncode == 0, r.stderr
        second = server.requests[first_run:]
        asked = [next(p.instruction for p in pairs if p.instruction in req.prompt) for req in second]
        assert not set(asked) & done  # nothing finished was asked again
        assert len(asked) == len(set(asked)) == 40 - len(done)  # each remaining pair exactly once
        recs = read_records(out)
        assert [x["instruction"] for x in recs] == [p.instruction for p in pairs]  # every pair, once, in order
        assert [x["p_output_2"] for x in recs] == [float(len(p.output_2) > len(p.output_1)) for p in pairs]


@pytest.mark.parametrize("bad", ["--concurrency=0", "--pairs=/no/such/file.jsonl"])
def test_cli_user_errors_exit_2(tmp_path, bad):
    from farm.cli import main

    write_pairs(tmp_path / "p.jsonl", make_pairs(1))
    args = ["annotate", "--pairs", str(tmp_path / "p.jsonl"), "--annotator", "gpt4o_mini_basic",
            "--out", str(tmp_path / "o.jsonl"), bad]
    assert main(args) == 2


def test_two_processes_share_one_cache(tmp_path):
    """Two runs at once on overlapping pairs, one cache file: both finish, every verdict lands once."""
    pairs = make_pairs(30)
    write_pairs(tmp_path / "a.jsonl", pairs[:20])
    write_pairs(tmp_path / "b.jsonl", pairs[10:])
    cache = tmp_path / "shared.sqlite"
    with FakeLLMServer(latency=0.02) as server:
        procs = [farm_annotate(server, "--pairs", str(tmp_path / f"{x}.jsonl"), "--annotator", "gpt4o_mini_basic",
                               "--out", str(tmp_path / f"{x}.out.jsonl"), "--cache", str(cache), "--no-progress",
                               "randomize_order=false", wait=False) for x in "ab"]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert committed(cache) == 30
        assert 30 <= len(server.requests) <= 40  # the 10 shared pairs may be asked by both, nothing more
        r = farm_annotate(server, "--pairs", str(tmp_path / "a.jsonl"), "--annotator", "gpt4o_mini_basic",
                          "--out", str(tmp_path / "again.jsonl"), "--cache", str(cache), "--no-progress",
                          "randomize_order=false")
        assert r.returncode == 0 and "0 requests" in r.stdout
