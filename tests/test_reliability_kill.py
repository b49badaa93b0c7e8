"""kill -9 at random points of `farm annotate`, `farm train` and `farm compare`, then re-run until done.

What must hold after any number of kills: the final files equal those of an uninterrupted run (where the code
promises determinism: annotation verdicts, trained weights, leaderboards), no pair finished before a kill is
asked for again, the cache holds one row per key and passes SQLite's integrity check, and no half-written
result file is ever left where a finished one is expected.

The default versions kill a few times; the `soak` versions (pytest -m soak) kill many times at random points.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer, count_tokens

from farm.io import read_records, write_pairs
from farm.types import Pair

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-kill-PLANTED-13579135"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
KILLS: list[str] = []  # what the current test killed where, for the record (printed with -s)


def farm(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "farm", *args], env={**ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, rng: random.Random, max_extra: float, deadline_s: float = 180) -> bool:
    """SIGKILL `proc` a random moment (up to max_extra s) after `ready()` holds; False if it finished first."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.01)
    time.sleep(rng.uniform(0, max_extra))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


# ----- annotate -----

def rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def instruction_of(r, instructions) -> str:
    """The pair a recorded request asked about (the server records only complete requests)."""
    found = [i for i in instructions if i in r.prompt]
    assert len(found) == 1, f"a recorded request names {len(found)} pairs: {r.prompt[:200]!r}"
    return found[0]


def annotate_with_kills(tmp_path: Path, n_pairs: int, n_kills: int, seed: int) -> None:
    """Kill `farm annotate` n_kills times, each time while it certainly runs: when the cache reaches a random
    number of rows the server holds every answer, and the process is killed (a random moment later) while it
    waits for its requests in flight. Then a last run finishes."""
    KILLS.clear()
    rng = random.Random(seed)
    pairs = [Pair(f"kill-{seed}-{i:03d}: tidy this", "x" * (3 + 2 * (i % 4)), "y" * (2 + 2 * (i * 3 % 5)))
             for i in range(n_pairs)]
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    out, cache = tmp_path / "ann.jsonl", tmp_path / "cache.sqlite"
    args = ["annotate", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotator", "gpt4o_mini_basic", "--out",
            str(out), "--cache", str(cache), "--concurrency", "4", "--no-progress", "backoff_base=0.01"]
    instructions = [p.instruction for p in pairs]
    with FakeLLMServer(latency=0.03) as server:
        server.fault_rule = lambda i, body: "500" if random.Random(i).random() < 0.1 else None
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.openai_base_url}
        finished_before: set[str] = set()
        for k in range(n_kills):
            proc = farm(*args, env=env)
            start_rows = rows(cache)
            target = start_rows + rng.randint(0, max(1, (n_pairs - start_rows) // (n_kills - k + 1)))
            n_before = len(server.requests)

            def ready(t=target) -> bool:
                if rows(cache) >= t:
                    server.hold()  # from here on nothing is answered: the process waits, alive
                    return True
                return False

            killed = kill_when(proc, ready, rng, 0.1)
            server.release()
            assert killed, f"kill {k}: the run finished before the kill point ({proc.communicate()[1][-2000:]})"
            KILLS.append(f"annotate kill {k}: killed at {rows(cache)}/{n_pairs} rows "
                         f"({len(server.requests) - n_before} requests, {server.partial} partial so far)")
            # nothing that was finished before this run was asked again during it
            asked = {instruction_of(r, instructions) for r in server.requests[n_before:]}
            assert not asked & finished_before
            with sqlite3.connect(cache) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                done = {k for (k,) in db.execute("SELECT pair_key FROM verdicts")}
            assert len(done) < n_pairs  # the kill really cut the run short
            finished_before = {p.instruction for p in pairs if p.key() in done or p.swapped().key() in done}
            assert not out.exists()  # never half-written, and not written before the end
        n_before = len(server.requests)
        finish(farm(*args, env=env))
        asked = [instruction_of(r, instructions) for r in server.requests[n_before:] if r.fault is None]
        assert not set(asked) & finished_before and len(asked) == len(set(asked))
    assert len(KILLS) == n_kills
    recs = read_records(out)
    assert [r["instruction"] for r in recs] == [p.instruction for p in pairs]  # every pair once, in order
    assert [r["p_output_2"] for r in recs] == [float(len(p.output_2) > len(p.output_1)) for p in pairs]
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT judge || pair_key) FROM verdicts").fetchone() == \
            (n_pairs, n_pairs)
    # the ledger saw every request of every run, the killed ones included
    from farm.annotators.ledger import ledger_path, summarize

    spend = summarize(ledger_path(cache))
    in_flight = 4 * n_kills  # at most 4 requests were in flight at each kill
    assert spend.runs == n_kills + 1
    assert len(server.requests) <= spend.requests <= len(server.requests) + in_flight  # sent, not all arrived
    assert spend.answered + spend.failed + spend.unknown == spend.requests and spend.unknown <= in_flight
    answered = [r for r in server.requests if r.fault is None and r.answer]
    assert spend.input_tokens <= sum(count_tokens(r.prompt) for r in answered)  # never more than was billed


def test_annotate_killed_repeatedly_finishes_exactly_once(tmp_path):
    annotate_with_kills(tmp_path, n_pairs=60, n_kills=3, seed=0)
    print("\n" + "\n".join(KILLS))


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_soak_annotate_killed_many_times(tmp_path, seed):
    annotate_with_kills(tmp_path, n_pairs=150, n_kills=12, seed=100 + seed)
    print("\n".join(KILLS))


# ----- train -----

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from farm.models.generation import format_prompt
    from farm.models.tiny import TinySpec, build_tiny

    d = tmp_path_factory.mktemp("kill_train")
    recs = [{"instruction": f"Sort: {a} {b}", "input": "", "output": " ".join(sorted([a, b]))}
            for a in "123456" for b in "789"]  # 18
    (d / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    prefs = [{"instruction": r["instruction"], "output_1": "no", "output_2": r["output"], "p_output_2": 1.0}
             for r in recs]
    (d / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    build_tiny([format_prompt(r["instruction"]) + r["output"] for r in recs], d / "tiny",
               TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)
    return d


def train_args(tiny: Path, method: str, out: Path, steps: int) -> list[str]:
    data = [f"data={tiny / 'sft.jsonl'}"] if method == "sft" else [f"preferences={tiny / 'prefs.jsonl'}"]
    return ["train", method, f"policy={tiny / 'tiny'}", *data, f"output_dir={out}",
            "train.per_device_batch_size=4", f"train.max_steps={steps}", "train.save_every=1",
            "train.progress=false", "train.lr=3e-3", "train.grad_accum=1"]


def train_with_kills(tiny: Path, tmp_path: Path, method: str, steps: int, n_kills: int, seed: int) -> None:
    KILLS.clear()
    import torch
    from safetensors.torch import load_file

    from farm.cli import main

    rng = random.Random(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same sums in the same order
    try:  # the uninterrupted reference runs in this process: one interpreter start fewer
        assert main(train_args(tiny, method, tmp_path / "ref", steps)) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "killed"
    step_file = out / "checkpoint" / "model" / "step.txt"

    def step() -> int:
        try:
            return int(step_file.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    kills = attempts = 0
    while kills < n_kills:
        attempts += 1
        assert attempts <= 3 * n_kills, f"only {kills} of {n_kills} kills landed before the runs finished"
        proc = farm(*train_args(tiny, method, out, steps))
        # leave at least two steps: a step takes ~10-50 ms, so the process is still running at the kill
        target = min(steps - 2, step() + rng.randint(1, 2))
        killed = kill_when(proc, lambda t=target: step() >= t, rng, 0.01)
        KILLS.append(f"train {method} attempt {attempts}: {'killed' if killed else 'finished'} at step "
                     f"{step()}/{steps}")
        if not killed:  # it finished first: start again from nothing and kill earlier
            finish(proc)
            shutil.rmtree(out)
            continue
        kills += 1
        assert not (out / "model" / "COMPLETE").exists() or step() == steps
    finish(farm(*train_args(tiny, method, out, steps)))
    a = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:  # same maths in the same order: equal to float tolerance (threads pinned to 1)
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, steps + 1))  # no step lost or repeated
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in ref], abs=1e-5)


def test_train_sft_killed_resumes_to_the_same_weights(tiny, tmp_path):
    train_with_kills(tiny, tmp_path, "sft", steps=8, n_kills=2, seed=0)
    print("\n" + "\n".join(KILLS))


@pytest.mark.soak
@pytest.mark.parametrize("method,seed", [("sft", 1), ("dpo", 2), ("dpo", 3)])
def test_soak_train_killed_many_times(tiny, tmp_path, method, seed):
    train_with_kills(tiny, tmp_path, method, steps=12, n_kills=8, seed=seed)
    print("\n".join(KILLS))


# ----- compare -----

COMPARE = ["progress=false", "methods=[sft,best_of_n]", "world.sizes.sft=160", "world.sizes.preference=64",
           "world.sizes.unlabeled=16", "world.sizes.eval=16", "sft.train.epochs=1.0", "reward.train.epochs=1.0",
           "n_boot=50"]


def compare_with_kills(tmp_path: Path, n_kills: int, seed: int) -> None:
    KILLS.clear()
    import pandas as pd

    rng = random.Random(seed)
    finish(farm("compare", str(REPO / "configs" / "smoke.yaml"), f"run_dir={tmp_path / 'ref'}", *COMPARE))
    run_dir = tmp_path / "killed"

    def stages() -> int:
        try:
            return len(json.loads((run_dir / "stages.json").read_text()))
        except (FileNotFoundError, ValueError):
            return 0

    kills = attempts = 0
    while kills < n_kills:
        attempts += 1
        assert attempts <= 3 * n_kills, f"only {kills} of {n_kills} kills landed before the runs finished"
        proc = farm("compare", str(REPO / "configs" / "smoke.yaml"), f"run_dir={run_dir}", *COMPARE)
        target = stages() + rng.randint(0, 2)
        killed = kill_when(proc, lambda t=target: stages() >= t, rng, 2.0 / attempts, deadline_s=400)
        KILLS.append(f"compare attempt {attempts}: {'killed' if killed else 'finished'} after {stages()} stages")
        if not killed:  # it finished first: start again from nothing and kill earlier
            finish(proc)
            shutil.rmtree(run_dir)
            continue
        kills += 1
    finish(farm("compare", str(REPO / "configs" / "smoke.yaml"), f"run_dir={run_dir}", *COMPARE))
    a = pd.read_csv(tmp_path / "ref" / "leaderboard.csv")
    b = pd.read_csv(run_dir / "leaderboard.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)
    for rel in ("annotations/pool.jsonl", "annotations/human.jsonl"):
        assert [r.get("p_output_2") for r in read_records(tmp_path / "ref" / rel)] == \
            [r.get("p_output_2") for r in read_records(run_dir / rel)]


@pytest.mark.slow
def test_compare_killed_resumes_to_the_same_leaderboard(tmp_path):
    compare_with_kills(tmp_path, n_kills=2, seed=0)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
def test_soak_compare_killed_many_times(tmp_path, seed):
    compare_with_kills(tmp_path, n_kills=8, seed=10 + seed)
    print("\n".join(KILLS))
