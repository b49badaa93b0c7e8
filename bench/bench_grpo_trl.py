"""Our GRPO (farm.methods.grpo) vs TRL's GRPOTrainer on the same tiny model, prompts, reward and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_grpo_trl.py [--steps 20] [--repeats 3] [--threads 1]
    python bench/bench_grpo_trl.py --model smollm2 --steps 2 --prompts 2 --new-tokens 12 --lr 1e-5 --repeats 1

Equal maths: k = 4 samples per prompt, 4 prompts per step (16 completions), advantage = reward − group mean over
the group's std (+1e-4), DAPO's token-level normalisation (TRL's default loss_type), KL as β·k3 per token in the
loss with β = 0.05, clip ε 0.2 / ε_high 0.28, one gradient step per rollout (num_iterations = 1: ratio 1), AdamW
(β 0.9/0.999, ε 1e-5, no weight decay), constant lr, grad-norm clip 1.0, temperature 1 with no top-k/top-p, at most
16 new tokens, fp32, use_cpu=True. The reward is a function (fraction of digit characters), so scoring costs nothing
and the comparison is about the trainer. Samples differ (different random streams): the reward curves agree only
in trend; throughput = optimiser steps per second (generation included), medians of interleaved runs, with the
machine's load average beside them. Writes bench/results/grpo_trl.json and the block in bench/RESULTS.md.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/bench_grpo_trl.py` from anywhere
from bench.bench_rloo_trl import BETA, K, digit_fraction, make_prompts  # noqa: E402
from bench.harness import emit, run_worker  # noqa: E402
from bench.harness import model_dir as make_model_dir  # noqa: E402
from farm.methods import grpo  # noqa: E402
from farm.methods.loop import rl_train_config  # noqa: E402
from farm.methods.scorers import FunctionScorer  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402

LR, MAX_NEW, PROMPTS_PER_STEP = 1e-3, 16, 4  # the RLOO bench's tiny-model settings (its defaults)
CLIP, CLIP_HIGH = 0.2, 0.28  # the rest of the settings are the RLOO bench's (same model, prompts, reward, batch)


def trl_train(trainer_cls, key: str, **kw) -> tuple[list[float], float, float]:
    """Build and train a TRL trainer: (the value it logs under `key` at every step, set-up seconds, train seconds)."""
    from transformers import TrainerCallback

    logged: list[float] = []

    class Grab(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **_):
            if logs and key in logs:
                logged.append(float(logs[key]))

    t0 = time.perf_counter()
    trainer = trainer_cls(callbacks=[Grab()], **kw)
    t1 = time.perf_counter()
    trainer.train()
    return logged, t1 - t0, time.perf_counter() - t1


def run_ours(model_dir: str, prompts: list[str], steps: int, per_step: int = PROMPTS_PER_STEP,
             new_tokens: int = MAX_NEW, lr: float = LR) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    n = per_step * K
    cfg = grpo.Config(steps=steps, prompts_per_step=per_step, k=K, minibatch_size=n, micro_batch_size=n,
                      loss="dapo", scale_rewards="group", clip=CLIP, clip_high=CLIP_HIGH, kl_coef=BETA,
                      max_new_tokens=new_tokens, train=rl_train_config(lr=lr, weight_decay=0.0, progress=False,
                                                                       device="cpu"))
    t0 = time.perf_counter()
    hist = grpo.train(model, tok, [{"instruction": p, "input": "", "prompt": p} for p in prompts],
                      FunctionScorer(lambda instruction, input, output: digit_fraction(output)), cfg)
    dt = time.perf_counter() - t0
    return {"rewards": [h["reward"] for h in hist], "train_s": dt, "steps_per_s": steps / dt,
            "split": {k[5:]: sum(h[k] for h in hist) for k in hist[0] if k.startswith("time_")}}


def run_trl(model_dir: str, prompts: list[str], steps: int, out: str, per_step: int = PROMPTS_PER_STEP,
            new_tokens: int = MAX_NEW, lr: float = LR) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")

    def reward(prompts, completions, **kw):
        return [digit_fraction(c) for c in completions]

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=per_step * K, num_generations=K,
                      gradient_accumulation_steps=1, max_steps=steps, learning_rate=lr, lr_scheduler_type="constant",
                      warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-5,
                      max_grad_norm=1.0, beta=BETA, epsilon=CLIP, epsilon_high=CLIP_HIGH, loss_type="dapo",
                      scale_rewards="group", num_iterations=1, max_completion_length=new_tokens, temperature=1.0,
                      top_k=0, top_p=1.0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                      report_to="none", logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0,
                      disable_tqdm=True)
    rewards, _, dt = trl_train(GRPOTrainer, "reward", model=model, reward_funcs=[reward], args=args,
                               processing_class=tok, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
    return {"rewards": rewards, "train_s": dt, "steps_per_s": steps / dt}


def markdown(data: dict) -> str:
    """The bench/RESULTS.md block (a pure function of bench/results/grpo_trl[_smollm2].json)."""
    med, r = data["median_steps_per_s"], data["rewards"]
    rss = data.get("peak_rss_mb")

    def ends(xs: list[float]) -> str:
        n = max(1, min(5, len(xs) // 2))
        return f"{statistics.mean(xs[:n]):.3f} → {statistics.mean(xs[-n:]):.3f}"

    head = (f"`python bench/bench_grpo_trl.py --model {data['model']} --steps {data['steps']} --prompts "
            f"{data['prompts']} --new-tokens {data['new_tokens']} --lr {data['lr']:g} --repeats {data['repeats']} "
            f"--threads {data['threads']}`, " if "model" in data else "")
    lines = [f"{head}trl {data['trl']}, torch {data['torch']}, {data['threads']} thread(s), {data['steps']} steps × "
             f"{data['repeats']} interleaved repeats, load average {data['load_average'][0]:.1f} at the start and "
             f"{data['load_average'][1]:.1f} at the end", ""]
    if rss:
        lines += ["| | steps/s (median) | peak RSS (MB) | reward, first → last steps (run 1) |", "|---|---|---|---|",
                  f"| farm `grpo.train` | {med['farm']:.3f} | {rss['farm']:.0f} | {ends(r['farm'])} |",
                  f"| TRL `GRPOTrainer` | {med['trl']:.3f} | {rss['trl']:.0f} | {ends(r['trl'])} |", ""]
    else:
        lines += ["| | steps/s (median) | reward, mean of first 5 → last 5 steps (run 1) |", "|---|---|---|",
                  f"| farm `grpo.train` | {med['farm']:.2f} | {ends(r['farm'])} |",
                  f"| TRL `GRPOTrainer` | {med['trl']:.2f} | {ends(r['trl'])} |", ""]
    lines.append(f"Speed-up **{data['speedup']:.2f}×** (farm / TRL, median steps per second)"
                 + (f"; median of the {len(data['paired_ratios'])} back-to-back pairs' ratios "
                    f"{data['paired_speedup']:.2f}× (range {min(data['paired_ratios']):.2f}–"
                    f"{max(data['paired_ratios']):.2f})" if "paired_ratios" in data else "")
                 + (f"; peak RSS farm / TRL {rss['farm'] / rss['trl']:.2f}." if rss else "."))
    split = data.get("farm_split_s")
    if split:  # `policy_forward`: the on-policy training forward (before it was timed, it was in no phase)
        total = sum(split.values())
        lines.append("farm's time (median run, " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)"
                                                           for k, v in split.items() if k != "scoring") + ").")
    return "\n".join(lines)


def worker(a) -> None:
    torch.set_num_threads(a.threads)
    prompts = make_prompts(64, a.model, a.model_dir)
    kw = {"per_step": a.prompts, "new_tokens": a.new_tokens, "lr": a.lr}
    with tempfile.TemporaryDirectory() as d:
        emit(run_ours(a.model_dir, prompts, a.steps, **kw) if a.worker == "farm"
             else run_trl(a.model_dir, prompts, a.steps, d, **kw))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=PROMPTS_PER_STEP, help="prompts per step (× k = 4 completions)")
    ap.add_argument("--new-tokens", type=int, default=MAX_NEW)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--worker", choices=("farm", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import trl

    from farm import docblocks

    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict]] = {"farm": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        path = make_model_dir(args.model, make_prompts(64) + [" ".join("0123456789")] * 8, Path(d))
        common = ["--model", args.model, "--model-dir", path, "--steps", str(args.steps), "--threads",
                  str(args.threads), "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens),
                  "--lr", str(args.lr)]
        for r in range(args.repeats):  # interleaved, each in its own process (its own peak RSS)
            for k in runs:
                runs[k].append(run_worker(__file__, [k, *common]))
                print(f"repeat {r} {k:>4}: {runs[k][-1]['steps_per_s']:.3f} steps/s, peak RSS "
                      f"{runs[k][-1]['peak_rss_mb']:.0f} MB (load average {runs[k][-1]['load_avg']})", flush=True)
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in runs.items()}
    split = {k: statistics.median(x["split"][k] for x in runs["farm"]) for k in runs["farm"][0]["split"]}
    pr = [f["steps_per_s"] / t["steps_per_s"] for f, t in zip(runs["farm"], runs["trl"])]
    data = {"trl": trl.__version__, "torch": torch.__version__, "model": args.model, "threads": args.threads,
            "steps": args.steps, "repeats": args.repeats, "prompts": args.prompts, "new_tokens": args.new_tokens,
            "lr": args.lr, "load_average": load, "median_steps_per_s": med, "speedup": med["farm"] / med["trl"],
            "paired_ratios": pr, "paired_speedup": statistics.median(pr), "farm_split_s": split,
            "peak_rss_mb": {k: statistics.median(x["peak_rss_mb"] for x in v) for k, v in runs.items()},
            "steps_per_s": {k: [x["steps_per_s"] for x in v] for k, v in runs.items()},
            "rewards": {k: v[0]["rewards"] for k, v in runs.items()}}
    name = "grpo_trl" if args.model == "tiny" else f"grpo_trl_{args.model}"
    docblocks.write_block(docblocks.ROOT / "bench" / "RESULTS.md", name, data, f"bench/results/{name}.json",
                          "bench.bench_grpo_trl:markdown")
    print(markdown(data))


if __name__ == "__main__":
    main()
