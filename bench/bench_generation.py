"""farm's lean sampling loop (farm/models/fast_decode.py) vs transformers' `generate`, the same tokens drawn
(asserted), interleaved, on RLOO's shapes: the tiny model (16 prompts × ≤ 16 new tokens) and SmolLM2-135M-Instruct
(8 prompts × ≤ 12 new tokens, chat template). Plain temperature-1 sampling, fp32 CPU, 1 thread.

    python bench/bench_generation.py [--repeats 10] [--models tiny smollm2]

Writes bench/results/generation.json and its block in bench/RESULTS.md, with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rloo_trl import make_prompts  # noqa: E402
from harness import load_avg, model_dir  # noqa: E402

from farm.docblocks import write_block  # noqa: E402
from farm.models.generation import generate  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402

SHAPES = {"tiny": (16, 16), "smollm2": (8, 12)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"repeats": a.repeats, "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as d:
        for kind in a.models:
            path = model_dir(kind, make_prompts(64) + [" ".join("0123456789")] * 8, Path(d))
            model, tok = load_causal_lm(path, device="cpu")
            n, new = SHAPES[kind]
            prompts = make_prompts(n, kind, path)
            times: dict[str, list[float]] = {"hf": [], "lean": []}
            loads = [load_avg()]
            for r in range(a.repeats + 1):
                got = {}
                for engine in ("hf", "lean"):
                    t0 = time.perf_counter()
                    got[engine] = generate(model, tok, prompts, max_new_tokens=new, seed=r,
                                           engine="hf" if engine == "hf" else "auto").response_ids
                    if r:
                        times[engine].append(time.perf_counter() - t0)
                assert torch.equal(got["hf"], got["lean"]), "the lean loop drew other tokens"
                loads.append(load_avg())
            med = {k: statistics.median(v) for k, v in times.items()}
            out["models"][kind] = {"prompts": n, "new_tokens": new, "median_s": med, "speedup": med["hf"] / med["lean"],
                                   "load_avg": [min(loads), max(loads)]}
            print(kind, out["models"][kind], flush=True)
    write_block(Path(__file__).parent / "RESULTS.md", "generation", out, "bench/results/generation.json",
                "bench.bench_generation:markdown")


def markdown(d: dict) -> str:
    rows = [f"`python bench/bench_generation.py --repeats {d['repeats']}` (torch {d['torch']}, fp32 CPU, 1 thread, "
            "temperature-1 sampling; both draw the same tokens from the same seeds, asserted every round)", "",
            "| model | prompts × new tokens | `generate` (s) | lean loop (s) | speed-up | load average |",
            "|---|---|---|---|---|---|"]
    for kind, m in d["models"].items():
        rows.append(f"| {kind} | {m['prompts']} × ≤ {m['new_tokens']} | {m['median_s']['hf']:.3f} | "
                    f"{m['median_s']['lean']:.3f} | **{m['speedup']:.2f}×** | {m['load_avg'][0]}–{m['load_avg'][1]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
