# python bench/bench_annotate.py [--cases 8@0.05 32@0.05 32@0.2] [--repeats 3] [--alpaca-eval-python PATH]
#                                [--write-results]
"""Annotation throughput (issue #4): pairs/s against a local OpenAI-protocol server with a fixed latency, at a
concurrency limit, for

- farm:        annotate_pairs with the shipped gpt4o_mini_basic judge (no cache), base_url = the local server;
- alpaca_eval: its PairwiseAnnotator with its `gpt4_turbo` evaluator (same "Output (a)/(b)" protocol, regex
               parser, one pair per prompt, `openai_completions` with num_procs = the limit), pointed at the same
               server through OPENAI_BASE_URL / OPENAI_API_BASE; run with the Python of a venv where
               `pip install alpaca-eval` worked (it pins its own openai), in a subprocess;
- raw client:  the bare openai AsyncOpenAI client (same HTTP transport as farm's) with an
               asyncio.Semaphore(limit), sending the same rendered prompts: what this machine and server allow
               with zero annotation logic;
- ideal:       limit / latency.

A case is `limit@latency_seconds`. The server runs in its own process (tests/fake_llm_server.py) so its threads
do not share the client's GIL; client and server still share this machine's cores, which caps what any client
can reach at high limits (the raw-client column shows that cap).
Every repeat uses fresh pairs. Medians over repeats; runs are interleaved so machine load hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm.annotators import AnnotationRun, annotate_pairs, load_annotator  # noqa: E402
from farm.types import Pair  # noqa: E402

SECTION = "## Annotation throughput (#4)"


def make_pairs(n: int, tag: str) -> list[Pair]:
    return [Pair(f"[{tag}] item {i}: rewrite the sentence in the passive voice.", "The cat chased the mouse." * (
        1 + i % 3), "The mouse was chased by the cat." * (1 + i % 2)) for i in range(n)]


def bench_farm(url: str, limit: int, pairs: list[Pair]) -> float:
    judge = load_annotator("gpt4o_mini_basic", base_url=url, concurrency=limit)
    run = AnnotationRun()
    start = time.perf_counter()
    anns = annotate_pairs(pairs, judge, progress=False, run=run)
    elapsed = time.perf_counter() - start
    assert run.requests == len(pairs) and all(a.preference is not None for a in anns), run.summary()
    return len(pairs) / elapsed


def bench_raw(url: str, limit: int, pairs: list[Pair]) -> float:
    import openai

    from farm.annotators.backends import http_client
    from farm.annotators.judge import read_template
    from farm.annotators.loader import load_judge, resolve_folder
    from farm.config import read_yaml

    folder = resolve_folder("gpt4o_mini_basic")
    config = load_judge(folder, read_yaml(folder / "config.yaml"), {})[0].config
    template = read_template(folder, config)
    prompts = [template.render([p]) for p in pairs]

    async def main() -> float:
        client = openai.AsyncOpenAI(api_key="sk-bench", base_url=url, max_retries=0,
                                    http_client=http_client(openai, config))  # the transport farm uses
        sem = asyncio.Semaphore(limit)

        async def one(prompt: str) -> None:
            async with sem:
                await client.chat.completions.create(model="gpt-4o-mini", max_tokens=8, temperature=0,
                                                     messages=[{"role": "user", "content": prompt}])

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        elapsed = time.perf_counter() - start
        await client.close()
        return len(pairs) / elapsed

    return asyncio.run(main())


# Runs inside the alpaca_eval venv: argv = limit, then JSON lists of pairs per repeat on stdin.
ALPACA_EVAL_SCRIPT = r"""
import json, sys, time, logging
from pathlib import Path
logging.disable(logging.WARNING)
import alpaca_eval
from alpaca_eval.annotators import PairwiseAnnotator
limit = int(sys.argv[1])
cfg_dir = Path(sys.argv[2])
src = Path(alpaca_eval.__file__).parent / "evaluators_configs"
(cfg_dir / "chatgpt").mkdir(parents=True, exist_ok=True)
(cfg_dir / "chatgpt" / "basic_prompt.txt").write_text((src / "chatgpt" / "basic_prompt.txt").read_text())
(cfg_dir / "bench").mkdir(exist_ok=True)
(cfg_dir / "bench" / "configs.yaml").write_text(f'''
bench:
  prompt_template: "chatgpt/basic_prompt.txt"
  fn_completions: "openai_completions"
  completions_kwargs:
    model_name: "gpt-4-1106-preview"
    max_tokens: 50
    temperature: 0
    num_procs: {limit}
  completion_parser_kwargs:
    outputs_to_match:
      1: '(?:^|\n) ?Output \(a\)'
      2: '(?:^|\n) ?Output \(b\)'
  batch_size: 1
''')
out = []
for line in sys.stdin:
    pairs = json.loads(line)
    annotator = PairwiseAnnotator(annotators_config="bench/configs.yaml", base_dir=str(cfg_dir),
                                  caching_path=None, is_avoid_reannotations=False)
    start = time.perf_counter()
    result = annotator.annotate_pairs(pairs)
    elapsed = time.perf_counter() - start
    assert len(result) == len(pairs) and all(r.get("preference") is not None for r in result), result[:2]
    out.append(len(pairs) / elapsed)
print(json.dumps(out))
"""


def bench_alpaca_eval(python: str, url: str, limit: int, batches: list[list[Pair]]) -> list[float]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": url, "OPENAI_API_BASE": url,
           "OPENAI_MAX_CONCURRENCY": str(limit), "TQDM_DISABLE": "1"}
    stdin = "\n".join(json.dumps([{"instruction": p.instruction, "output_1": p.output_1, "output_2": p.output_2}
                                  for p in b]) for b in batches) + "\n"
    with tempfile.TemporaryDirectory() as cfg_dir:
        r = subprocess.run([python, "-c", ALPACA_EVAL_SCRIPT, str(limit), cfg_dir], input=stdin, env=env,
                           capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"alpaca_eval run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def server_stats(url: str) -> dict:
    """Requests the server saw since the last call and the most it answered at once."""
    import urllib.request

    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats") as r:
        return json.loads(r.read())


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_llm_server.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["8@0.05", "32@0.05", "32@0.2"],
                    help="concurrency limit @ server latency in seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs-per-slot", type=int, default=25, help="pairs = limit × this (min 200)")
    ap.add_argument("--alpaca-eval-python", default=None, help="python of a venv with alpaca-eval installed")
    ap.add_argument("--write-results", action="store_true", help="replace our section of bench/RESULTS.md")
    args = ap.parse_args(argv)
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    rows = []
    for case in args.cases:
        limit, latency = int(case.split("@")[0]), float(case.split("@")[1])
        proc, url = start_server(latency)
        try:
            bench_farm(url, 4, make_pairs(20, "warm-up"))  # imports and first connections out of the timings
            bench_raw(url, 4, make_pairs(20, "warm-up"))
            n = max(200, limit * args.pairs_per_slot)
            res: dict[str, list[float]] = {"farm": [], "raw client": [], "alpaca_eval": []}
            seen, ae_batches = {}, []
            server_stats(url)
            for rep in range(args.repeats):  # interleaved, so load changes hit both alike
                res["farm"].append(bench_farm(url, limit, make_pairs(n, f"farm-{case}-{rep}")))
                seen["farm"] = server_stats(url)
                res["raw client"].append(bench_raw(url, limit, make_pairs(n, f"raw-{case}-{rep}")))
                seen["raw client"] = server_stats(url)
                ae_batches.append(make_pairs(n, f"ae-{case}-{rep}"))
            if args.alpaca_eval_python:
                res["alpaca_eval"] = bench_alpaca_eval(args.alpaca_eval_python, url, limit, ae_batches)
                seen["alpaca_eval"] = server_stats(url)  # all its repeats together
        finally:
            proc.terminate()
            proc.wait()
        print(f"{case}: server saw {seen}", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in res.items() if v}
        row = {"limit": limit, "latency": latency, "pairs": n, "ideal": limit / latency, **med,
               "load": os.getloadavg()[1]}  # 5-minute load average: others' jobs share these cores
        rows.append(row)
        print(json.dumps({**row, "all": res}), flush=True)
    table = render(rows, args)
    print(table)
    if args.write_results:
        write_section(table)
    return 0


def render(rows: list[dict], args) -> str:
    lines = [SECTION, "",
             f"`python bench/bench_annotate.py --cases {' '.join(args.cases)} --repeats {args.repeats}"
             f"{' --alpaca-eval-python …' if args.alpaca_eval_python else ''}` on {os.cpu_count()} CPU cores "
             f"(shared with the server and with whatever else ran), {time.strftime('%Y-%m-%d')}. Local "
             "OpenAI-protocol server (tests/fake_llm_server.py, its own process) answering every request after a "
             f"fixed latency; one pair per request; medians of {args.repeats} runs of limit × "
             f"{args.pairs_per_slot} pairs (≥ 200), fresh pairs each run.",
             "",
             "| limit | latency | ideal (limit/latency) | farm pairs/s | alpaca_eval pairs/s | raw openai client "
             "pairs/s | farm / alpaca_eval | farm / ideal | farm / raw client | load avg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ae = r.get("alpaca_eval")
        ae_text, ratio = (f"{ae:.1f}", f"{r['farm'] / ae:.1f}×") if ae else ("n/a", "n/a")
        lines.append(f"| {r['limit']} | {r['latency'] * 1000:.0f} ms | {r['ideal']:.0f} | {r['farm']:.1f} | "
                     f"{ae_text} | {r['raw client']:.1f} | {ratio} | {r['farm'] / r['ideal']:.0%} | "
                     f"{r['farm'] / r['raw client']:.0%} | {r['load']:.1f} |")
    return "\n".join(lines) + "\n"


def write_section(table: str) -> None:
    """Replace (or append) our section of bench/RESULTS.md, leaving the other sections as they are."""
    from farm.io import atomic_write_text

    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + table + (text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + table
    atomic_write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
