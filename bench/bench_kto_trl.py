"""Our KTO (farm.methods.kto) vs TRL's KTOTrainer on the same model, data and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_kto_trl.py [--steps 20] [--pairs 32] [--repeats 3] [--threads 1]
    python bench/bench_kto_trl.py --model smollm2 --steps 3 --pairs 8 --lr 1e-5 --repeats 3 --threads 2

Equal maths: the KTO loss with β = 0.1 and both weights 1, the reference point z0 = max(0, mean log-ratio of
mismatched answers) with each answer's mismatched partner the previous answer of the batch (TRL rotates within a
batch; ours within the file: the batch is the WHOLE data set every step, so the two are the same pairs), reference
log-probs precomputed (TRL: precompute_ref_log_probs=True), AdamW (β 0.9/0.95, ε 1e-8, no weight decay), constant
lr, grad-norm clip 1.0, fp32, use_cpu=True. Since every step sees the same answers, the per-step losses must agree
(printed side by side). Throughput = optimiser steps per second of the training loop (reference pre-computation
excluded for both; timed separately), medians of interleaved runs, with the load average beside them. Each run is
a process of its own, so the allocator setting farm's trainers apply on CPU (`farm.models.cpu_memory`) stays in
farm's process; two control rows show what it is worth: farm without it, and TRL with it. Writes
bench/results/kto_trl.json and the block in bench/RESULTS.md. `--model smollm2`: SmolLM2-135M-Instruct (pretrained,
its chat template for the prompts; pass a small `--lr`) → bench/results/kto_trl_smollm2.json.
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
from bench.bench_grpo_trl import trl_train  # noqa: E402
from bench.harness import model_dir as make_model_dir  # noqa: E402
from bench.harness import prompt  # noqa: E402
from farm.methods import kto  # noqa: E402
from farm.methods.data import tokenize_pairs  # noqa: E402
from farm.methods.loop import TrainConfig  # noqa: E402
from farm.methods.pairs import precompute_reference  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402

LR, BETA = 1e-3, 0.1


def make_answers(n: int, kind: str = "tiny", tokenizer_dir: str = "") -> list[dict]:
    """Sorting prompts (the Alpaca format for the tiny model, the chat template for SmolLM2): the sorted numbers
    are desirable, a wordier reversed answer is not (alternating)."""
    out = []
    for i in range(n):
        nums = [str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)]
        good = i % 2 == 0
        out.append({"prompt": prompt(tokenizer_dir, kind, "Sort: " + " ".join(nums)), "label": good,
                    "completion": " ".join(sorted(nums)) if good else "the answer is " + " ".join(reversed(nums))})
    return out


def run_ours(model_dir: str, answers: list[dict], steps: int, lr: float = LR, keep: bool = True) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = kto.Config(beta=BETA, max_prompt_tokens=512, max_response_tokens=512,
                     train=TrainConfig(lr=lr, schedule="constant", warmup_ratio=0.0, per_device_batch_size=len(answers),
                                       max_steps=steps, max_grad_norm=1.0, progress=False, device="cpu",
                                       cpu_keep_freed_memory=keep))
    t0 = time.perf_counter()
    ex = tokenize_pairs(tok, kto.with_mismatched(answers), 512, 512, kto.KEYS)
    ex = precompute_reference(model, tok, ex, keys=kto.KEYS)
    t1 = time.perf_counter()
    res = kto.train(model, tok, ex, cfg)
    t2 = time.perf_counter()
    return {"losses": [h["loss"] for h in res["history"]], "train_s": t2 - t1, "ref_s": t1 - t0,
            "steps_per_s": steps / (t2 - t1)}


def run_trl(model_dir: str, answers: list[dict], steps: int, out: str, lr: float = LR) -> dict:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")
    args = KTOConfig(output_dir=out, per_device_train_batch_size=len(answers), gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                     weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0,
                     beta=BETA, desirable_weight=1.0, undesirable_weight=1.0, precompute_ref_log_probs=True,
                     max_length=None, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                     report_to="none", logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0,
                     disable_tqdm=True)
    losses, ref_s, train_s = trl_train(KTOTrainer, "loss", model=model, args=args,
                                       train_dataset=Dataset.from_list(answers), processing_class=tok)
    return {"losses": losses, "train_s": train_s, "ref_s": ref_s, "steps_per_s": steps / train_s}


COMPETITORS = {  # worker name → (row label, keep freed memory in the process)
    "farm": ("farm `kto.train`", True),
    "trl": ("TRL `KTOTrainer`", False),
    "farm_plain": ("control: farm, allocator as it comes (`train.cpu_keep_freed_memory: false`)", False),
    "trl_kept": ("control: TRL with farm's allocator setting (`cpu_memory.keep_freed_memory()`)", True),
}


def markdown(data: dict) -> str:
    """The bench/RESULTS.md block (a pure function of bench/results/kto_trl[_smollm2].json)."""
    med, rss = data["median"], data.get("peak_rss_mb", {})
    head = (f"`python bench/bench_kto_trl.py --model {data['model']} --steps {data['steps']} --pairs {data['answers']} "
            f"--lr {data['lr']:g} --repeats {data['repeats']} --threads {data['threads']}`, " if "model" in data else "")
    names = [k for k in COMPETITORS if k in med] if "peak_rss_mb" in data else ["farm", "trl"]
    rows = [f"| {COMPETITORS[k][0]} | {med[k]['steps_per_s']:.3f} | {med[k]['train_s']:.2f} | {med[k]['ref_s']:.2f} |"
            + (f" {rss[k]:.0f} |" if rss else "") for k in names]
    out = [f"{head}trl {data['trl']}, torch {data['torch']}, {data['threads']} thread(s), {data['answers']} answers per "
           f"step, {data['steps']} steps × {data['repeats']} interleaved repeats"
           + (", each run in its own process" if rss else "")
           + f", load average {data['load_average'][0]:.1f} at the start and {data['load_average'][1]:.1f} at the end",
           "", "| | steps/s (median) | train loop (s) | reference pass / set-up (s) |" + (" peak RSS (MB) |" if rss else ""),
           "|---|---|---|---|" + ("---|" if rss else ""), *rows, "",
           f"Speed-up **{data['speedup']:.2f}×** (farm / TRL, median steps per second)"
           + (f"; median of the {len(data['paired_ratios'])} back-to-back pairs' ratios {data['paired_speedup']:.2f}× "
              f"(range {min(data['paired_ratios']):.2f}–{max(data['paired_ratios']):.2f})"
              if "paired_ratios" in data else "")
           + ". Per-step losses: step 1 "
           f"{data['losses']['farm'][0]:.6f} (farm) vs {data['losses']['trl'][0]:.6f} (TRL), max |difference| over the "
           f"{len(data['losses']['farm'])} steps {data['max_loss_diff']:.1e}."]
    if "trl_kept" in med and "farm_plain" in med:
        ratio = {k: med[k]["steps_per_s"] / med["trl"]["steps_per_s"] for k in ("farm_plain", "trl_kept")}
        out.append(f"Where it comes from: farm with the allocator as it comes is {ratio['farm_plain']:.2f}× TRL (the "
                   f"one-prompt-pass reference point and farm's own passes); TRL given the same allocator setting is "
                   f"{ratio['trl_kept']:.2f}× plain TRL, and farm is "
                   f"{med['farm']['steps_per_s'] / med['trl_kept']['steps_per_s']:.2f}× that.")
    return "\n".join(out)


def worker(a) -> None:
    from bench.harness import emit
    from farm.models import cpu_memory

    torch.set_num_threads(a.threads)
    if a.worker == "trl_kept":
        cpu_memory.keep_freed_memory()
    answers = make_answers(a.pairs, a.model, a.model_dir)
    with tempfile.TemporaryDirectory() as d:
        emit(run_ours(a.model_dir, answers, a.steps, a.lr, keep=a.worker == "farm") if a.worker.startswith("farm")
             else run_trl(a.model_dir, answers, a.steps, d, a.lr))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=32, help="answers per step (half desirable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=tuple(COMPETITORS), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import trl

    from bench.harness import run_worker
    from farm import docblocks

    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict]] = {k: [] for k in COMPETITORS}
    with tempfile.TemporaryDirectory() as d:
        texts = [a["prompt"] + a["completion"] for a in make_answers(args.pairs)]
        model_dir = make_model_dir(args.model, texts, Path(d), n_layers=2, hidden=96, intermediate=256)
        common = ["--model", args.model, "--model-dir", model_dir, "--steps", str(args.steps), "--pairs",
                  str(args.pairs), "--lr", str(args.lr), "--threads", str(args.threads)]
        for r in range(args.repeats):  # interleaved, each run in its own process (its own allocator, its own RSS)
            for k in runs:
                runs[k].append(run_worker(__file__, [k, *common]))
                print(f"repeat {r} {k:>10}: {runs[k][-1]['steps_per_s']:.3f} steps/s, peak RSS "
                      f"{runs[k][-1]['peak_rss_mb']:.0f} MB (load average {runs[k][-1]['load_avg']})", flush=True)
    load.append(os.getloadavg()[0])
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("steps_per_s", "train_s", "ref_s")}
           for k, v in runs.items()}
    a, b = runs["farm"][0]["losses"], runs["trl"][0]["losses"]
    pr = [f["steps_per_s"] / t["steps_per_s"] for f, t in zip(runs["farm"], runs["trl"])]
    data = {"trl": trl.__version__, "torch": torch.__version__, "threads": args.threads, "answers": args.pairs,
            "steps": args.steps, "repeats": args.repeats, "load_average": load, "median": med,
            "speedup": med["farm"]["steps_per_s"] / med["trl"]["steps_per_s"],
            "max_loss_diff": max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("nan"),
            "losses": {"farm": a, "trl": b}, "steps_per_s": {k: [x["steps_per_s"] for x in v] for k, v in runs.items()},
            "peak_rss_mb": {k: statistics.median(x["peak_rss_mb"] for x in v) for k, v in runs.items()},
            "model": args.model, "lr": args.lr, "paired_ratios": pr, "paired_speedup": statistics.median(pr)}
    name = "kto_trl" if args.model == "tiny" else f"kto_trl_{args.model}"
    docblocks.write_block(docblocks.ROOT / "bench" / "RESULTS.md", name, data, f"bench/results/{name}.json",
                          "bench.bench_kto_trl:markdown")
    print(markdown(data))
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4}  {x:10.6f}  {y:10.6f}")


if __name__ == "__main__":
    main()
