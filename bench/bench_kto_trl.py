"""Our KTO (farm.methods.kto) vs TRL's KTOTrainer on the same tiny model, data and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_kto_trl.py [--steps 20] [--pairs 32] [--repeats 3] [--threads 1]

Equal maths: the KTO loss with β = 0.1 and both weights 1, the reference point z0 = max(0, mean log-ratio of
mismatched answers) with each answer's mismatched partner the previous answer of the batch (TRL rotates within a
batch; ours within the file: the batch is the WHOLE data set every step, so the two are the same pairs), reference
log-probs precomputed (TRL: precompute_ref_log_probs=True), AdamW (β 0.9/0.95, ε 1e-8, no weight decay), constant
lr, grad-norm clip 1.0, fp32, use_cpu=True. Since every step sees the same answers, the per-step losses must agree
(printed side by side). Throughput = optimiser steps per second of the training loop (reference pre-computation
excluded for both; timed separately), medians of interleaved runs, with the load average beside them. Writes
bench/results/kto_trl.json and the block in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/bench_kto_trl.py` from anywhere
from bench.bench_grpo_trl import trl_train
from farm.methods import kto
from farm.methods.data import tokenize_pairs
from farm.methods.loop import TrainConfig
from farm.methods.pairs import precompute_reference
from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

LR, BETA = 1e-3, 0.1


def make_answers(n: int) -> list[dict]:
    """Sorting prompts: the sorted numbers are desirable, a wordier reversed answer is not (alternating)."""
    out = []
    for i in range(n):
        nums = [str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)]
        good = i % 2 == 0
        out.append({"prompt": format_prompt("Sort: " + " ".join(nums)), "label": good,
                    "completion": " ".join(sorted(nums)) if good else "the answer is " + " ".join(reversed(nums))})
    return out


def run_ours(model_dir: str, answers: list[dict], steps: int) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = kto.Config(beta=BETA, max_prompt_tokens=512, max_response_tokens=512,
                     train=TrainConfig(lr=LR, schedule="constant", warmup_ratio=0.0, per_device_batch_size=len(answers),
                                       max_steps=steps, max_grad_norm=1.0, progress=False, device="cpu"))
    t0 = time.perf_counter()
    ex = tokenize_pairs(tok, kto.with_mismatched(answers), 512, 512, kto.KEYS)
    ex = precompute_reference(model, tok, ex, keys=kto.KEYS)
    t1 = time.perf_counter()
    res = kto.train(model, tok, ex, cfg)
    t2 = time.perf_counter()
    return {"losses": [h["loss"] for h in res["history"]], "train_s": t2 - t1, "ref_s": t1 - t0,
            "steps_per_s": steps / (t2 - t1)}


def run_trl(model_dir: str, answers: list[dict], steps: int, out: str) -> dict:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")
    args = KTOConfig(output_dir=out, per_device_train_batch_size=len(answers), gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0,
                     beta=BETA, desirable_weight=1.0, undesirable_weight=1.0, precompute_ref_log_probs=True,
                     max_length=None, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                     report_to="none", logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0,
                     disable_tqdm=True)
    losses, ref_s, train_s = trl_train(KTOTrainer, "loss", model=model, args=args,
                                       train_dataset=Dataset.from_list(answers), processing_class=tok)
    return {"losses": losses, "train_s": train_s, "ref_s": ref_s, "steps_per_s": steps / train_s}


def markdown(data: dict) -> str:
    """The bench/RESULTS.md block (a pure function of bench/results/kto_trl.json)."""
    med = data["median"]
    return "\n".join([
        f"trl {data['trl']}, torch {data['torch']}, {data['threads']} thread(s), {data['answers']} answers per step, "
        f"{data['steps']} steps × {data['repeats']} interleaved repeats, load average {data['load_average'][0]:.1f} "
        f"at the start and {data['load_average'][1]:.1f} at the end", "",
        "| | steps/s (median) | train loop (s) | reference pass / set-up (s) |", "|---|---|---|---|",
        *(f"| {name} | {med[k]['steps_per_s']:.2f} | {med[k]['train_s']:.2f} | {med[k]['ref_s']:.2f} |"
          for k, name in (("farm", "farm `kto.train`"), ("trl", "TRL `KTOTrainer`"))), "",
        f"Speed-up **{data['speedup']:.2f}×** (farm / TRL, median steps per second). Per-step losses: step 1 "
        f"{data['losses']['farm'][0]:.6f} (farm) vs {data['losses']['trl'][0]:.6f} (TRL), max |difference| over the "
        f"{len(data['losses']['farm'])} steps {data['max_loss_diff']:.1e}."])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=32, help="answers per step (half desirable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import trl

    from farm import docblocks

    load = [os.getloadavg()[0]]
    answers = make_answers(args.pairs)
    runs: dict[str, list[dict]] = {"farm": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        texts = [a["prompt"] + a["completion"] for a in answers]
        model_dir = str(build_tiny(texts, Path(d) / "tiny", TinySpec(n_layers=2, hidden=96, intermediate=256), seed=0))
        for r in range(args.repeats):  # interleaved, so a noisy neighbour hurts both alike
            runs["farm"].append(run_ours(model_dir, answers, args.steps))
            runs["trl"].append(run_trl(model_dir, answers, args.steps, str(Path(d) / f"trl{r}")))
    load.append(os.getloadavg()[0])
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("steps_per_s", "train_s", "ref_s")}
           for k, v in runs.items()}
    a, b = runs["farm"][0]["losses"], runs["trl"][0]["losses"]
    data = {"trl": trl.__version__, "torch": torch.__version__, "threads": args.threads, "answers": args.pairs,
            "steps": args.steps, "repeats": args.repeats, "load_average": load, "median": med,
            "speedup": med["farm"]["steps_per_s"] / med["trl"]["steps_per_s"],
            "max_loss_diff": max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("nan"),
            "losses": {"farm": a, "trl": b}, "steps_per_s": {k: [x["steps_per_s"] for x in v] for k, v in runs.items()}}
    docblocks.write_block(docblocks.ROOT / "bench" / "RESULTS.md", "kto_trl", data, "bench/results/kto_trl.json",
                          "bench.bench_kto_trl:markdown")
    print(markdown(data))
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4}  {x:10.6f}  {y:10.6f}")


if __name__ == "__main__":
    main()
