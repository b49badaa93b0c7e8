"""The scale path on a GPU, in a few minutes and without downloading anything: a ~0.5B Llama built from a config
(random weights), a byte-level tokenizer trained on the spot, then farm's own SFT, DPO and PPO code for a few
steps in bf16, each with tokens/s and the peak memory torch saw, beside `farm estimate`'s prediction for the same
budget. Run it through bench/gpu_check.sh (which sets a time limit):

    bash bench/gpu_check.sh                      # on the GPU: --size 0.5b --device cuda
    bash bench/gpu_check.sh --size tiny --device cpu --out /tmp/gpu_check.json     # the CPU rehearsal (a test)

On CUDA the peak is `torch.cuda.max_memory_allocated` (reset before each phase); on CPU it is the allocator's
tensor peak from the profiler (`farm.scale.measure_peak_cpu`), only to rehearse the script. The JSON lands in
`--out` (default bench/results/gpu_check.json); `--write-results` also renders its block in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

SIZES = {  # hidden, layers, heads, kv heads, MLP width, vocabulary (untied)
    "0.5b": dict(hidden=1024, layers=24, heads=16, kv_heads=4, intermediate=4864, vocab=32000),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512),
}
PHASES = {  # per phase: batch (sequences or pairs), prompt tokens, response tokens, steps
    "0.5b": {"sft": (8, 512, 0, 4), "dpo": (4, 256, 256, 4), "ppo": (16, 128, 128, 2)},
    "tiny": {"sft": (4, 32, 0, 2), "dpo": (2, 16, 16, 2), "ppo": (4, 16, 8, 1)},
}


def build(size: str, device: str, out: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from farm.models.loading import load_causal_lm, save_model
    from farm.models.tiny import train_tokenizer

    s = SIZES[size]
    texts = [f"Sort: {i % 10} {(i * 7) % 10} {(i * 3) % 10} -> the numbers in order, then a sentence {i}"
             for i in range(400)]
    tok = train_tokenizer(texts, min(s["vocab"], 2000))
    config = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                         intermediate_size=s["intermediate"], max_position_embeddings=2048, tie_word_embeddings=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    save_model(LlamaForCausalLM(config), tok, out)
    return str(out), load_causal_lm(str(out), device=device, dtype="bf16" if device == "cuda" else "fp32")


def peak_of(fn, device: str) -> tuple[float, float]:
    """(seconds, peak bytes) of fn()."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, float(torch.cuda.max_memory_allocated())
    from farm.scale import measure_peak_cpu

    t0 = time.perf_counter()
    peak = measure_peak_cpu(fn)
    return time.perf_counter() - t0, float(peak)


def records(n: int, words: int) -> list[dict]:
    return [{"instruction": "Sort: " + " ".join(str((i * 7 + k) % 10) for k in range(words)), "input": "",
             "output": " ".join(str(k % 10) for k in range(words))} for i in range(n)]


def run_sft(path, model, tok, device, B, P, R, steps) -> dict:
    from farm.methods.loop import TrainConfig, train_sft

    data = records(B * steps, P // 3)
    tc = TrainConfig(lr=1e-5, per_device_batch_size=B, max_steps=steps, progress=False, device=device)
    seconds, peak = peak_of(lambda: train_sft(model, tok, data, tc, max_len=P), device)
    return {"seconds": seconds, "peak_bytes": peak, "tokens": B * P * steps}


def run_dpo(path, model, tok, device, B, P, R, steps) -> dict:
    from farm.methods import dpo
    from farm.methods.loop import TrainConfig

    pairs = [{"prompt": r["instruction"] + " x" * (P // 2), "chosen": " 1" * (R // 2), "rejected": " 2" * (R // 2)}
             for r in records(B, 4)]
    cfg = dpo.Config(max_prompt_tokens=P, max_response_tokens=R,
                     train=TrainConfig(lr=1e-6, schedule="constant", warmup_ratio=0.0, per_device_batch_size=B,
                                       max_steps=steps, progress=False, device=device))
    seconds, peak = peak_of(lambda: dpo.train(model, tok, pairs, cfg), device)
    return {"seconds": seconds, "peak_bytes": peak, "tokens": 2 * B * (P + R) * steps}


def run_ppo(path, model, tok, device, B, P, R, steps) -> dict:
    from farm.methods import ppo
    from farm.methods.loop import rl_train_config
    from farm.methods.scorers import FunctionScorer

    data = [{**r, "prompt": r["instruction"] + " x" * (P // 2)} for r in records(B, 4)]
    cfg = ppo.Config(steps=steps, rollout_batch_size=B, minibatch_size=B // 2, micro_batch_size=B // 2,
                     max_new_tokens=R, max_prompt_tokens=P, value_lr=1e-6,
                     train=rl_train_config(lr=1e-6, progress=False, device=device))
    scorer = FunctionScorer(lambda i, x, o: sum(c.isdigit() for c in o) / max(len(o), 1))
    hist: list[dict] = []
    seconds, peak = peak_of(lambda: hist.extend(ppo.train(model, tok, data, scorer, cfg)), device)
    split = {k: sum(h.get(k, 0.0) for h in hist) for k in ("time_generation", "time_logprobs", "time_update")}
    return {"seconds": seconds, "peak_bytes": peak, "tokens": B * (P + R) * steps, "split_s": split}


def estimate_for(path: str, method: str, B: int, P: int, R: int, device: str) -> float:
    from farm.scale import Budget, estimate, resolve_shape

    budget = Budget(method=method, batch_size=B, prompt_len=P, response_len=R,
                    precision="bf16" if device == "cuda" else "fp32", device="cuda" if device == "cuda" else "cpu",
                    reference="precomputed" if method == "dpo" else "model",
                    **({"gen_batch_size": B, "score_batch_size": B, "ppo_epochs": 2} if method == "ppo" else {}))
    if method == "ppo":  # ppo.train's micro-batch is half the rollout (minibatch_size = micro_batch_size = B/2)
        budget.batch_size, budget.grad_accum = B // 2, 2
    return float(estimate(resolve_shape(path), budget).peak_bytes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=tuple(SIZES), default="0.5b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    ap.add_argument("--write-results", action="store_true", help="render the block in bench/RESULTS.md")
    ap.add_argument("--work", default="", help="folder for the built model (default: a temp folder)")
    a = ap.parse_args(argv)
    import tempfile

    work = Path(a.work or tempfile.mkdtemp(prefix="farm_gpu_check_"))
    t0 = time.perf_counter()
    path, (model, tok) = build(a.size, a.device, work / "model")
    n_params = sum(p.numel() for p in model.parameters())
    result: dict = {"size": a.size, "device": a.device, "params": n_params, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if a.device == "cuda" else "none (CPU rehearsal)",
                    "build_s": time.perf_counter() - t0, "phases": {}}
    print(f"{a.size}: {n_params / 1e6:.1f}M parameters on {result['gpu']}", flush=True)
    runners = {"sft": run_sft, "dpo": run_dpo, "ppo": run_ppo}
    for method, (B, P, R, steps) in PHASES[a.size].items():
        model, tok = _fresh(path, a.device)
        r = runners[method](path, model, tok, a.device, B, P, R, steps)
        r.update(batch=B, prompt_len=P, response_len=R, steps=steps, tokens_per_s=r["tokens"] / r["seconds"],
                 estimate_bytes=estimate_for(path, method, B, P, R, a.device))
        result["phases"][method] = r
        print(f"{method}: {r['tokens_per_s']:.0f} tokens/s, peak {r['peak_bytes'] / 2**20:.1f} MiB, estimate "
              f"{r['estimate_bytes'] / 2**20:.1f} MiB", flush=True)
        del model
    result["total_s"] = time.perf_counter() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if a.write_results:
        from farm.docblocks import write_block

        write_block(Path(__file__).parent / "RESULTS.md", "gpu_check", result, "bench/results/gpu_check.json",
                    "bench.gpu_check:markdown")
    print(f"done in {result['total_s']:.0f} s → {out}", flush=True)
    return 0


def _fresh(path: str, device: str):
    from farm.models.loading import load_causal_lm

    if device == "cuda":
        torch.cuda.empty_cache()
    return load_causal_lm(path, device=device, dtype="bf16" if device == "cuda" else "fp32")


def markdown(d: dict) -> str:
    rows = [f"{d['params'] / 1e6:.0f}M-parameter Llama built from a config, {d['gpu']}, torch {d['torch']}, bf16; "
            f"`bash bench/gpu_check.sh` ({d['total_s']:.0f} s in all)", "",
            "| phase | batch × (prompt + response) | steps | tokens/s | peak memory | `farm estimate` | estimate / peak |",
            "|---|---|---|---|---|---|---|"]
    for m, r in d["phases"].items():
        rows.append(f"| {m} | {r['batch']} × ({r['prompt_len']} + {r['response_len']}) | {r['steps']} | "
                    f"{r['tokens_per_s']:.0f} | {r['peak_bytes'] / 2**30:.2f} GiB | {r['estimate_bytes'] / 2**30:.2f} GiB "
                    f"| {r['estimate_bytes'] / r['peak_bytes']:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
