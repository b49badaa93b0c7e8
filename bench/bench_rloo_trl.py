"""Our RLOO (farm.methods.rloo) vs TRL's RLOOTrainer on the same tiny model, prompts, reward and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_rloo_trl.py [--steps 20] [--repeats 3] [--threads 1]

Equal maths: k = 4 samples per prompt, 4 prompts per step (16 completions), leave-one-out baseline, KL (k1 summed
over the response) in the reward with β = 0.05, one gradient step per rollout (num_iterations = 1: ratio 1),
sequence-level clipped loss averaged over completions, AdamW (eps 1e-5, no weight decay), constant lr, clip 1.0,
temperature 1 with no top-k/top-p, at most 16 new tokens, fp32, use_cpu=True. The reward is a function (fraction
of digit characters), so scoring costs nothing and the comparison is about the trainer itself. Samples differ
(different random streams), so the reward curves agree only in trend; throughput = optimiser steps per second
(generation included). Writes bench/results/rloo_trl.json.
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
from farm.methods import rloo
from farm.methods.loop import rl_train_config
from farm.methods.scorers import FunctionScorer
from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

LR, BETA, K, PROMPTS_PER_STEP, MAX_NEW = 1e-3, 0.05, 4, 4, 16


def digit_fraction(text: str) -> float:
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def make_prompts(n: int) -> list[str]:
    return [format_prompt("Sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 3))) for i in range(n)]


def run_ours(model_dir: str, prompts: list[str], steps: int) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = rloo.Config(steps=steps, prompts_per_step=PROMPTS_PER_STEP, k=K, minibatch_size=PROMPTS_PER_STEP * K,
                      micro_batch_size=PROMPTS_PER_STEP * K, kl_coef=BETA, max_new_tokens=MAX_NEW,
                      train=rl_train_config(lr=LR, progress=False, device="cpu"))
    scorer = FunctionScorer(lambda instruction, input, output: digit_fraction(output))
    t0 = time.perf_counter()
    hist = rloo.train(model, tok, [{"instruction": p, "input": "", "prompt": p} for p in prompts], scorer, cfg)
    dt = time.perf_counter() - t0
    split = {k: sum(h[k] for h in hist) for k in ("time_generation", "time_scoring", "time_logprobs", "time_update")}
    return {"rewards": [h["reward"] for h in hist], "train_s": dt, "steps_per_s": steps / dt, "split": split}


def run_trl(model_dir: str, prompts: list[str], steps: int, out: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")

    def reward(prompts, completions, **kw):
        return [digit_fraction(c) for c in completions]

    args = RLOOConfig(output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * K, num_generations=K,
                      gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR, lr_scheduler_type="constant",
                      warmup_steps=0, weight_decay=0.0, adam_epsilon=1e-5, max_grad_norm=1.0, beta=BETA,
                      num_iterations=1, max_completion_length=MAX_NEW, temperature=1.0, top_k=0, top_p=1.0,
                      bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                      logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True)
    rewards: list[float] = []

    class Grab(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    trainer = RLOOTrainer(model=model, reward_funcs=[reward], args=args, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), callbacks=[Grab()])
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    return {"rewards": rewards, "train_s": dt, "steps_per_s": steps / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import trl

    prompts = make_prompts(64)
    runs: dict[str, list[dict]] = {"farm": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        model_dir = str(build_tiny(prompts + [" ".join("0123456789")] * 8, Path(d) / "tiny", TinySpec(), seed=0))
        for r in range(args.repeats):
            runs["farm"].append(run_ours(model_dir, prompts, args.steps))
            runs["trl"].append(run_trl(model_dir, prompts, args.steps, str(Path(d) / f"trl{r}")))
    med = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in runs.items()}

    def ends(r: list[float]) -> tuple[float, float]:
        return statistics.mean(r[:5]), statistics.mean(r[-5:])

    print(f"trl {trl.__version__}, torch {torch.__version__}, threads {args.threads}, {PROMPTS_PER_STEP}×{K} "
          f"completions/step, {args.steps} steps, repeats {args.repeats}")
    for k in ("farm", "trl"):
        first, last = ends(runs[k][0]["rewards"])
        print(f"{k:>5}: {med[k]:.2f} steps/s; reward first 5 steps {first:.3f} → last 5 {last:.3f}")
    split = {k: statistics.median(x["split"][k] for x in runs["farm"]) for k in runs["farm"][0]["split"]}
    print("farm time split (s, median run): " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in split.items()))
    ratio = med["farm"] / med["trl"]
    print(f"speed-up farm / trl = {ratio:.2f}x")
    atomic_write_text(Path(__file__).parent / "results" / "rloo_trl.json", json.dumps(
        {"trl": trl.__version__, "torch": torch.__version__, "threads": args.threads, "steps": args.steps,
         "repeats": args.repeats, "median_steps_per_s": med, "speedup": ratio, "farm_split_s": split,
         "rewards": {k: v[0]["rewards"] for k, v in runs.items()}}, indent=2))


if __name__ == "__main__":
    main()
