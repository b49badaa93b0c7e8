"""Where a PPO iteration's time goes (farm.methods.ppo), CPU, tiny model: generation / scoring / log-probs
(behaviour + reference) / update (value pass, GAE, epochs × minibatches of policy and value forward/backward).

    python bench/bench_ppo_breakdown.py [--steps 10] [--rollout 32] [--new-tokens 32] [--threads 1] [--rm]
    python bench/bench_ppo_breakdown.py --model smollm2 --steps 3 --rollout 8 --new-tokens 16 --lr 1e-5

`--rm` scores with a reward model (a tiny sequence-classification model: a real forward pass per rollout) instead
of a Python function. "Overhead" = wall time of the iteration not inside any of the four timed phases (Python
bookkeeping, logging, RNG, KL controller). Prints medians over iterations (the first one, warm-up, is dropped) and
writes bench/results/ppo_breakdown.json and its block in bench/RESULTS.md. `--model smollm2`: SmolLM2-135M-Instruct (chat template) as policy, its
backbone as the value model; writes bench/results/ppo_breakdown_smollm2.json and its block in bench/RESULTS.md,
with the process's peak RSS and the load average.
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
from harness import load_avg, model_dir, peak_rss_mb, prompt  # noqa: E402

from farm.docblocks import write_block  # noqa: E402
from farm.methods import ppo  # noqa: E402
from farm.methods.loop import rl_train_config  # noqa: E402
from farm.methods.scorers import FunctionScorer, RewardModelScorer  # noqa: E402
from farm.models.loading import load_causal_lm, load_scalar_model  # noqa: E402

PHASES = ("time_generation", "time_scoring", "time_logprobs", "time_update")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rollout", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rm", action="store_true", help="score with a tiny reward model instead of a function")
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = [{"instruction": "Sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)), "input": ""}
               for i in range(64)]
    load_before = load_avg()
    with tempfile.TemporaryDirectory() as d:
        path = model_dir(args.model, [r["instruction"] for r in records] + ["0 1 2 3 4 5 6 7 8 9"] * 8, Path(d))
        if args.model != "tiny":
            records = [{**r, "prompt": prompt(path, args.model, r["instruction"])} for r in records]
        policy, tok = load_causal_lm(path, device="cpu")
        if args.rm:
            rm, rtok = load_scalar_model(path, device="cpu")
            torch.nn.init.normal_(rm.score.weight, std=0.1)
            scorer = RewardModelScorer(rm, rtok)
        else:
            scorer = FunctionScorer(lambda i, x, o: sum(c.isdigit() for c in o) / max(len(o), 1))
        cfg = ppo.Config(steps=args.steps + 1, rollout_batch_size=args.rollout, minibatch_size=args.rollout // 2,
                         micro_batch_size=args.rollout // 2, max_new_tokens=args.new_tokens, kl_coef=0.02,
                         save_every=0, value_lr=args.lr, train=rl_train_config(lr=args.lr, progress=False, device="cpu"))
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
    print(f"PPO iteration, {args.model} model ({sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M params), "
          f"{args.rollout} rollouts × ≤{args.new_tokens} tokens, {cfg.epochs} epochs × 2 minibatches, "
          f"scorer={'reward model' if args.rm else 'function'}, threads {args.threads}; median of {len(rows)}")
    for k in (*PHASES, "overhead"):
        print(f"  {k.replace('time_', ''):<11} {med[k] * 1000:8.1f} ms  {100 * med[k] / med['wall']:5.1f}%")
    print(f"  {'total':<11} {med['wall'] * 1000:8.1f} ms  ({1 / med['wall']:.2f} iterations/s)")
    if args.model == "tiny":
        write_block(Path(__file__).parent / "RESULTS.md", "ppo_breakdown",
                    {"args": vars(args), "median_s": med}, "bench/results/ppo_breakdown.json",
                    "bench.bench_ppo_breakdown:markdown_tiny")
        return
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"peak RSS {peak_rss_mb():.0f} MB; load average {load_before} → {load_avg()}")
    write_block(Path(__file__).parent / "RESULTS.md", "ppo_breakdown_smollm2",
                {"args": vars(args), "median_s": med, "iterations": len(rows), "params": n_params,
                 "epochs": cfg.epochs, "peak_rss_mb": peak_rss_mb(), "load_avg": [load_before, load_avg()],
                 "torch": torch.__version__}, "bench/results/ppo_breakdown_smollm2.json",
                "bench.bench_ppo_breakdown:markdown")


def markdown(d: dict) -> str:
    """The block in bench/RESULTS.md."""
    a, med = d["args"], d["median_s"]
    rows = [f"`python bench/bench_ppo_breakdown.py --model {a['model']} --steps {a['steps']} --rollout {a['rollout']} "
            f"--new-tokens {a['new_tokens']} --lr {a['lr']:g} --threads {a['threads']}` ({d['params'] / 1e6:.0f}M "
            f"parameters, fp32 CPU, {a['rollout']} rollouts × ≤ {a['new_tokens']} tokens, {d['epochs']} epochs × 2 "
            f"minibatches, value model on the same backbone, function scorer; median of {d['iterations']} iterations "
            f"after one warm-up; peak RSS {d['peak_rss_mb']:.0f} MB; load average {d['load_avg'][0]} → "
            f"{d['load_avg'][1]})", ""]
    total = f"{med['wall']:.2f} s ({1 / med['wall']:.3f} it/s)"
    return "\n".join(rows + _phase_table(med, lambda x: f"{x:.2f} s", total))


def _phase_table(med: dict, time, total: str) -> list[str]:
    """The phase | time | share rows; `time` formats seconds, `total` is the last row's time cell."""
    rows = ["| phase | time | share |", "|---|---|---|"]
    rows += [f"| {k.replace('time_', '')} | {time(med[k])} | {100 * med[k] / med['wall']:.1f} % |"
             for k in (*PHASES, "overhead")]
    return rows + [f"| total | {total} | |"]


def markdown_tiny(d: dict) -> str:
    """The tiny model's block in bench/RESULTS.md (bench/results/ppo_breakdown.json)."""
    a, med = d["args"], d["median_s"]
    rows = [f"`python bench/bench_ppo_breakdown.py --steps {a['steps']} --rollout {a['rollout']} --new-tokens "
            f"{a['new_tokens']} --threads {a['threads']}{' --rm' if a['rm'] else ''}` (tiny Llama 2 × 96, "
            f"{a['rollout']} rollouts × ≤ {a['new_tokens']} tokens, 2 epochs × 2 minibatches, separate value model, "
            f"{'reward-model' if a['rm'] else 'function'} scorer; medians over {a['steps']} iterations after one "
            "warm-up)", ""]
    return "\n".join(rows + _phase_table(med, lambda x: f"{1000 * x:.1f} ms",
                                          f"{1000 * med['wall']:.0f} ms ({1 / med['wall']:.2f} it/s)"))


if __name__ == "__main__":
    main()
