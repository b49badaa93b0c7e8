"""Our GRPO (farm.methods.grpo) vs TRL's GRPOTrainer on the same tiny model, prompts, reward and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_grpo_trl.py [--steps 20] [--repeats 3] [--threads 1]

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
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_rloo_trl import BETA, K, digit_fraction, make_prompts
from farm.methods import grpo
from farm.methods.loop import rl_train_config
from farm.methods.scorers import FunctionScorer
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

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


def run_ours(model_dir: str, prompts: list[str], steps: int) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    n = PROMPTS_PER_STEP * K
    cfg = grpo.Config(steps=steps, prompts_per_step=PROMPTS_PER_STEP, k=K, minibatch_size=n, micro_batch_size=n,
                      loss="dapo", scale_rewards="group", clip=CLIP, clip_high=CLIP_HIGH, kl_coef=BETA,
                      max_new_tokens=MAX_NEW, train=rl_train_config(lr=LR, weight_decay=0.0, progress=False,
                                                                     device="cpu"))
    t0 = time.perf_counter()
    hist = grpo.train(model, tok, [{"instruction": p, "input": "", "prompt": p} for p in prompts],
                      FunctionScorer(lambda instruction, input, output: digit_fraction(output)), cfg)
    dt = time.perf_counter() - t0
    return {"rewards": [h["reward"] for h in hist], "train_s": dt, "steps_per_s": steps / dt,
            "split": {k[5:]: sum(h[k] for h in hist) for k in hist[0] if k.startswith("time_")}}


def run_trl(model_dir: str, prompts: list[str], steps: int, out: str) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")

    def reward(prompts, completions, **kw):
        return [digit_fraction(c) for c in completions]

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * K, num_generations=K,
                      gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR, lr_scheduler_type="constant",
                      warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-5,
                      max_grad_norm=1.0, beta=BETA, epsilon=CLIP, epsilon_high=CLIP_HIGH, loss_type="dapo",
                      scale_rewards="group", num_iterations=1, max_completion_length=MAX_NEW, temperature=1.0,
                      top_k=0, top_p=1.0, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
                      report_to="none", logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0,
                      disable_tqdm=True)
    rewards, _, dt = trl_train(GRPOTrainer, "reward", model=model, reward_funcs=[reward], args=args,
                               processing_class=tok, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]))
    return {"rewards": rewards, "train_s": dt, "steps_per_s": steps / dt}


def markdown(data: dict) -> str:
    """The bench/RESULTS.md block (a pure function of bench/results/grpo_trl.json)."""
    med, r = data["median_steps_per_s"], data["rewards"]

    def ends(xs: list[float]) -> str:
        return f"{statistics.mean(xs[:5]):.3f} → {statistics.mean(xs[-5:]):.3f}"

    return "\n".join([
        f"trl {data['trl']}, torch {data['torch']}, {data['threads']} thread(s), {data['steps']} steps × "
        f"{data['repeats']} interleaved repeats, load average {data['load_average'][0]:.1f} at the start and "
        f"{data['load_average'][1]:.1f} at the end", "",
        "| | steps/s (median) | reward, mean of first 5 → last 5 steps (run 1) |", "|---|---|---|",
        f"| farm `grpo.train` | {med['farm']:.2f} | {ends(r['farm'])} |",
        f"| TRL `GRPOTrainer` | {med['trl']:.2f} | {ends(r['trl'])} |", "",
        f"Speed-up **{data['speedup']:.2f}×** (farm / TRL, median steps per second)"
        + (f"; median of the {len(data['paired_ratios'])} back-to-back pairs' ratios {data['paired_speedup']:.2f}× "
           f"(range {min(data['paired_ratios']):.2f}–{max(data['paired_ratios']):.2f})." if "paired_ratios" in data
           else ".")])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import trl

    from farm import docblocks

    load = [os.getloadavg()[0]]
    prompts = make_prompts(64)
    runs: dict[str, list[dict]] = {"farm": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        model_dir = str(build_tiny(prompts + [" ".join("0123456789")] * 8, Path(d) / "tiny", TinySpec(), seed=0))
        for r in range(args.repeats):  # interleaved, so a noisy neighbour hurts both alike
            runs["farm"].append(run_ours(model_dir, prompts, args.steps))
            runs["trl"].append(run_trl(model_dir, prompts, args.steps, str(Path(d) / f"trl{r}")))
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in runs.items()}
    split = {k: statistics.median(x["split"][k] for x in runs["farm"]) for k in runs["farm"][0]["split"]}
    data = {"trl": trl.__version__, "torch": torch.__version__, "threads": args.threads, "steps": args.steps,
            "repeats": args.repeats, "load_average": load, "median_steps_per_s": med, "speedup": med["farm"] / med["trl"],
            "paired_ratios": (pr := [f["steps_per_s"] / t["steps_per_s"] for f, t in zip(runs["farm"], runs["trl"])]),
            "paired_speedup": statistics.median(pr), "farm_split_s": split, "steps_per_s": {k: [x["steps_per_s"] for x in v] for k, v in runs.items()},
            "rewards": {k: v[0]["rewards"] for k, v in runs.items()}}
    docblocks.write_block(docblocks.ROOT / "bench" / "RESULTS.md", "grpo_trl", data, "bench/results/grpo_trl.json",
                          "bench.bench_grpo_trl:markdown")
    print(markdown(data))


if __name__ == "__main__":
    main()
