"""Our DPO (farm.methods.dpo) vs TRL's DPOTrainer on the same tiny model, data and batch, CPU.

    pip install -e '.[bench]'        # trl (1.16 here) beside torch 2.13; never a default dependency
    python bench/bench_dpo_trl.py [--steps 20] [--pairs 32] [--repeats 3] [--threads 1]

Equal maths: sigmoid loss with β = 0.1, reference log-probs precomputed (TRL: precompute_ref_log_probs=True),
AdamW with the same betas (0.9, 0.95), eps 1e-8, no weight decay, constant learning rate, grad-norm clip 1.0,
fp32 (bf16=False), no gradient checkpointing, use_cpu=True. The batch is the WHOLE data set every step, so both
trainers see the same pairs at every step whatever their shuffling: the per-step losses must agree (printed side
by side). Throughput = optimiser steps per second of the training loop (reference pre-computation excluded for
both; it is timed separately). Prints a table of medians over `--repeats` runs and writes
bench/results/dpo_trl.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from farm.io import atomic_write_text
from farm.methods import dpo
from farm.methods.loop import TrainConfig
from farm.methods.pairs import precompute_reference
from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

LR, BETA = 1e-3, 0.1


def make_pairs(n: int) -> list[dict]:
    """Sorting prompts: chosen = the sorted numbers, rejected = a shuffled, wordier answer."""
    out = []
    for i in range(n):
        nums = [str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)]
        out.append({"prompt": format_prompt("Sort: " + " ".join(nums)), "chosen": " ".join(sorted(nums)),
                    "rejected": "the answer is " + " ".join(reversed(nums))})
    return out


def run_ours(model_dir: str, pairs: list[dict], steps: int) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = dpo.Config(beta=BETA, max_prompt_tokens=512, max_response_tokens=512,
                     train=TrainConfig(lr=LR, schedule="constant", warmup_ratio=0.0, per_device_batch_size=len(pairs),
                                       max_steps=steps, max_grad_norm=1.0, progress=False, device="cpu"))
    t0 = time.perf_counter()
    ex = precompute_reference(model, tok, pairs, dpo.LOSSES[cfg.loss], cfg.max_prompt_tokens, cfg.max_response_tokens)
    t1 = time.perf_counter()
    res = dpo.train(model, tok, ex, cfg)
    t2 = time.perf_counter()
    return {"losses": [h["loss"] for h in res["history"]], "train_s": t2 - t1, "ref_s": t1 - t0,
            "steps_per_s": steps / (t2 - t1)}


def run_trl(model_dir: str, pairs: list[dict], steps: int, out: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")
    args = DPOConfig(output_dir=out, per_device_train_batch_size=len(pairs), gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0,
                     beta=BETA, loss_type=["sigmoid"], precompute_ref_log_probs=True, max_length=None,
                     bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                     logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True)
    losses: list[float] = []

    class Grab(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         callbacks=[Grab()])
    t1 = time.perf_counter()
    out_metrics = trainer.train()
    t2 = time.perf_counter()
    return {"losses": losses, "train_s": t2 - t1, "ref_s": t1 - t0, "steps_per_s": steps / (t2 - t1),
            "trl_train_runtime": out_metrics.metrics.get("train_runtime")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import trl

    pairs = make_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as d:
        texts = [p["prompt"] + p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
        model_dir = str(build_tiny(texts, Path(d) / "tiny", TinySpec(n_layers=args.layers, hidden=args.hidden,
                                                                       intermediate=args.hidden * 8 // 3), seed=0))
        runs: dict[str, list[dict]] = {"farm": [], "trl": []}
        for r in range(args.repeats):  # interleaved, so a noisy neighbour hurts both alike
            runs["farm"].append(run_ours(model_dir, pairs, args.steps))
            runs["trl"].append(run_trl(model_dir, pairs, args.steps, str(Path(d) / f"trl{r}")))
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("steps_per_s", "train_s", "ref_s")}
           for k, v in runs.items()}
    trl_own = statistics.median(x["trl_train_runtime"] for x in runs["trl"])  # TRL's own train_runtime
    a, b = runs["farm"][0]["losses"], runs["trl"][0]["losses"]
    max_diff = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("nan")
    print(f"trl {trl.__version__}, torch {torch.__version__}, threads {args.threads}, {args.pairs} pairs/step, "
          f"{args.steps} steps, repeats {args.repeats}")
    print(f"{'step':>4}  {'farm loss':>10}  {'trl loss':>10}")
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4}  {x:10.6f}  {y:10.6f}")
    print(f"max |loss difference| = {max_diff:.2e}")
    for k in ("farm", "trl"):
        print(f"{k:>5}: {med[k]['steps_per_s']:.2f} steps/s (train loop {med[k]['train_s']:.2f} s; "
              f"reference pass/setup {med[k]['ref_s']:.2f} s)")
    ratio = med["farm"]["steps_per_s"] / med["trl"]["steps_per_s"]
    print(f"speed-up farm / trl = {ratio:.2f}x (against TRL's own train_runtime, which leaves out its "
          f"train() set-up: {med['trl']['train_s'] and trl_own / med['farm']['train_s']:.2f}x)")
    result = {"trl": trl.__version__, "torch": torch.__version__, "threads": args.threads, "pairs": args.pairs,
              "steps": args.steps, "repeats": args.repeats, "median": med, "speedup": ratio,
              "speedup_vs_trl_train_runtime": trl_own / med["farm"]["train_s"],
              "max_loss_diff": max_diff, "losses": {"farm": a, "trl": b}}
    atomic_write_text(Path(__file__).parent / "results" / "dpo_trl.json", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
