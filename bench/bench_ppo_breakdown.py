"""Where a PPO iteration's time goes (farm.methods.ppo), CPU, tiny model: generation / scoring / log-probs
(behaviour + reference) / update (value pass, GAE, epochs × minibatches of policy and value forward/backward).

    python bench/bench_ppo_breakdown.py [--steps 10] [--rollout 32] [--new-tokens 32] [--threads 1] [--rm]

`--rm` scores with a reward model (a tiny sequence-classification model: a real forward pass per rollout) instead
of a Python function. "Overhead" = wall time of the iteration not inside any of the four timed phases (Python
bookkeeping, logging, RNG, KL controller). Prints medians over iterations (the first one, warm-up, is dropped) and
writes bench/results/ppo_breakdown.json.
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
from farm.methods import ppo
from farm.methods.loop import rl_train_config
from farm.methods.scorers import FunctionScorer, RewardModelScorer
from farm.models.loading import load_causal_lm, load_scalar_model
from farm.models.tiny import TinySpec, build_tiny

PHASES = ("time_generation", "time_scoring", "time_logprobs", "time_update")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rollout", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rm", action="store_true", help="score with a tiny reward model instead of a function")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = [{"instruction": "Sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)), "input": ""}
               for i in range(64)]
    with tempfile.TemporaryDirectory() as d:
        model_dir = build_tiny([r["instruction"] for r in records] + ["0 1 2 3 4 5 6 7 8 9"] * 8, Path(d) / "tiny",
                               TinySpec(), seed=0)
        policy, tok = load_causal_lm(str(model_dir), device="cpu")
        if args.rm:
            rm, rtok = load_scalar_model(str(model_dir), device="cpu")
            torch.nn.init.normal_(rm.score.weight, std=0.1)
            scorer = RewardModelScorer(rm, rtok)
        else:
            scorer = FunctionScorer(lambda i, x, o: sum(c.isdigit() for c in o) / max(len(o), 1))
        cfg = ppo.Config(steps=args.steps + 1, rollout_batch_size=args.rollout, minibatch_size=args.rollout // 2,
                         micro_batch_size=args.rollout // 2, max_new_tokens=args.new_tokens, kl_coef=0.02,
                         save_every=0, train=rl_train_config(lr=1e-3, progress=False, device="cpu"))
        walls: list[float] = []
        last = [time.perf_counter()]

        def log(row: dict) -> None:
            now = time.perf_counter()
            walls.append(now - last[0])
            last[0] = now

        hist = ppo.train(policy, tok, records, scorer, cfg, log=log)
    rows = [{**h, "wall": w} for h, w in zip(hist, walls)][1:]  # drop the warm-up iteration
    med = {k: statistics.median(r[k] for r in rows) for k in (*PHASES, "wall")}
    med["overhead"] = max(0.0, med["wall"] - sum(med[k] for k in PHASES))
    print(f"PPO iteration, tiny model ({sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M params), "
          f"{args.rollout} rollouts × ≤{args.new_tokens} tokens, {cfg.epochs} epochs × 2 minibatches, "
          f"scorer={'reward model' if args.rm else 'function'}, threads {args.threads}; median of {len(rows)}")
    for k in (*PHASES, "overhead"):
        print(f"  {k.replace('time_', ''):<11} {med[k] * 1000:8.1f} ms  {100 * med[k] / med['wall']:5.1f}%")
    print(f"  {'total':<11} {med['wall'] * 1000:8.1f} ms  ({1 / med['wall']:.2f} iterations/s)")
    atomic_write_text(Path(__file__).parent / "results" / "ppo_breakdown.json",
                      json.dumps({"args": vars(args), "median_s": med}, indent=2))


if __name__ == "__main__":
    main()
