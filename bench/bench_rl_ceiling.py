"""How much can RL improve the quickstart's SFT policy under the gold judge, with a PERFECT reward and with judge
rewards? (#6 diagnostic; not a speed benchmark.)

    python bench/bench_rl_ceiling.py --run runs/quickstart [--steps 600] [--only gold_rloo,pool_rloo]

Starts every row from the finished quickstart's SFT model and trains RLOO (or PPO) with one reward:
- the world's gold quality itself (`FunctionScorer`: the ceiling of what RL can do here at this budget);
- a judge's verdict against the SFT policy's greedy answer (`JudgeScorer`: training pool, a GPT-4-like judge,
  with and without a length penalty).
Then samples the eval prompts at the run's eval temperature (0.7, same seed for every row) and prints the gold win
rate against the baseline ± SE, the paired difference with the SFT policy ± paired SE (same prompts), mean gold
quality and mean length. Writes bench/results/rl_ceiling.json and its block in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from farm.docblocks import write_block
from farm.io import read_records
from farm.methods import ppo, rloo
from farm.methods.data import prompt_text
from farm.methods.loop import rl_train_config
from farm.methods.scorers import FunctionScorer, JudgeScorer
from farm.models.generation import generate
from farm.models.loading import load_causal_lm
from farm.worlds import tasks

ROWS = {  # name → (method, reward, settings)
    "gold_rloo": ("rloo", "gold", {"lr": 3e-4}),
    "gold_rloo_lr1e-3": ("rloo", "gold", {"lr": 1e-3}),
    "gold_ppo_lr5e-4": ("ppo", "gold", {"lr": 5e-4}),
    "gold_ppo_lr1e-4": ("ppo", "gold", {"lr": 1e-4}),
    "pool_rloo": ("rloo", "alpacafarm_pool", {"lr": 3e-4}),
    "gpt4_like_rloo": ("rloo", "gpt4_like", {"lr": 3e-4}),
    "gpt4_like_rloo_lenpen": ("rloo", "gpt4_like", {"lr": 3e-4, "length_penalty": 0.03}),
}


def gold_wins(run: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ev = read_records(run / "data" / "eval.json")
    base = {(b["instruction"], b.get("input", "")): b["output"] for b in read_records(run / "data" / "baseline_outputs.json")}
    wins, qs = [], []
    for r, t in zip(ev, texts):
        key = (r["instruction"], r.get("input", ""))
        qb, q = tasks.quality(*key, base[key]), tasks.quality(*key, t)
        wins.append(1.0 if q > qb else 0.5 if q == qb else 0.0)
        qs.append(q)
    return np.array(wins), np.array(qs)


def eval_texts(model, tok, run: Path, temperature: float) -> list[str]:
    ev = read_records(run / "data" / "eval.json")
    return generate(model, tok, [prompt_text(r, tok, "alpaca") for r in ev], max_new_tokens=32,
                    temperature=temperature, batch_size=64, seed=7).texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/quickstart")
    ap.add_argument("--steps", type=int, default=600, help="RLOO steps (16 prompts x 4 answers each)")
    ap.add_argument("--ppo-steps", type=int, default=80)
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    sft_path = str(run / "models" / "sft" / "model")
    prompts = read_records(run / "data" / "unlabeled.json") + read_records(run / "data" / "preference.json")
    model, tok = load_causal_lm(sft_path, device="cpu")
    sft_w, sft_q = gold_wins(run, sft_texts := eval_texts(model, tok, run, args.temperature))
    out = {"sft": {"gold_win": 100 * sft_w.mean(), "se": 100 * sft_w.std() / np.sqrt(len(sft_w)),
                   "quality": sft_q.mean(), "length": float(np.mean([len(t) for t in sft_texts]))}}
    print(f"{'row':24s} {'gold win':>12s} {'Δ vs SFT (paired)':>18s} {'quality':>8s} {'length':>7s} {'s':>5s}")
    print(f"{'sft':24s} {out['sft']['gold_win']:6.1f} ± {out['sft']['se']:3.1f} {'':>18s} "
          f"{out['sft']['quality']:8.3f} {out['sft']['length']:7.1f}")
    names = [n for n in ROWS if not args.only or n in args.only.split(",")]
    for name in names:
        method, reward, settings = ROWS[name]
        t0 = time.time()
        policy, _ = load_causal_lm(sft_path, device="cpu", tokenizer=tok)
        ref, _ = load_causal_lm(sft_path, device="cpu", tokenizer=tok)
        if reward == "gold":
            scorer = FunctionScorer(tasks.quality)
        else:
            from farm.annotators.synthetic import make_annotator

            def reference(records, ref=ref):
                return generate(ref, tok, [prompt_text(r, tok, "alpaca") for r in records], max_new_tokens=32,
                                greedy=True, batch_size=64).texts

            scorer = JudgeScorer(make_annotator(reward, tasks.quality_parts), reference,
                                 length_penalty=settings.get("length_penalty", 0.0))
        if method == "rloo":
            cfg = rloo.Config(steps=args.steps, prompts_per_step=16, k=4, minibatch_size=64, micro_batch_size=64,
                              kl_coef=0.05, train=rl_train_config(lr=settings["lr"], device="cpu", progress=False))
            rloo.train(policy, tok, prompts, scorer, cfg, ref_policy=ref)
        else:
            cfg = ppo.Config(steps=args.ppo_steps, rollout_batch_size=32, minibatch_size=16, micro_batch_size=16,
                             kl_coef=0.1, train=rl_train_config(lr=settings["lr"], device="cpu", progress=False))
            ppo.train(policy, tok, prompts, scorer, cfg, ref_policy=ref)
        texts = eval_texts(policy, tok, run, args.temperature)
        w, q = gold_wins(run, texts)
        d = w - sft_w
        row = {"method": method, "reward": reward, **settings, "steps": cfg.steps,
               "gold_win": 100 * w.mean(), "se": 100 * w.std() / np.sqrt(len(w)),
               "delta": 100 * d.mean(), "delta_se": 100 * d.std() / np.sqrt(len(d)), "quality": q.mean(),
               "length": float(np.mean([len(t) for t in texts])), "seconds": time.time() - t0}
        out[name] = row
        print(f"{name:24s} {row['gold_win']:6.1f} ± {row['se']:3.1f} {row['delta']:+9.1f} ± {row['delta_se']:3.1f}"
              f"      {row['quality']:8.3f} {row['length']:7.1f} {row['seconds']:5.0f}", flush=True)
    write_block(Path(__file__).parent / "RESULTS.md", "rl_ceiling", out, "bench/results/rl_ceiling.json",
                "bench.bench_rl_ceiling:markdown")


REWARDS = {"gold": "gold quality", "alpacafarm_pool": "training pool's verdict (alpacafarm_pool)",
           "gpt4_like": "gpt4_like's verdict"}


def _signed(x: float) -> str:
    return f"{x:+.1f}".replace("-", "−")


def markdown(d: dict) -> str:
    """The block in bench/RESULTS.md (a pure function of bench/results/rl_ceiling.json)."""
    s = d["sft"]
    rows = ["| row | reward | lr | gold win | Δ vs SFT (paired) | mean gold quality | mean length (chars) | s |",
            "|---|---|---|---|---|---|---|---|",
            f"| SFT policy | — | — | {s['gold_win']:.1f} ± {s['se']:.1f} | — | {s['quality']:.3f} | "
            f"{s['length']:.1f} | — |"]
    for name, r in d.items():
        if name == "sft":
            continue
        method = "RLOO" if r["method"] == "rloo" else f"PPO ({r['steps']} steps)"
        reward = REWARDS.get(r["reward"], r["reward"])
        if r.get("length_penalty"):
            reward += f" − {r['length_penalty']:g} per 10 chars longer"
        lr = f"{r['lr']:.0e}".replace("e-0", "e-")
        rows.append(f"| {method} | {reward} | {lr} | {r['gold_win']:.1f} ± {r['se']:.1f} | "
                    f"{_signed(r['delta'])} ± {r['delta_se']:.1f} | {r['quality']:.3f} | {r['length']:.1f} | "
                    f"{r['seconds']:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
