"""How much does each RL reward say about GOLD quality on the policy's own answers? (#6 diagnostic; not a speed
benchmark.)

    python bench/bench_reward_signal.py --run runs/learnable [--prompts 256] [--k 4]

From a finished compare run: the SFT policy answers `--prompts` unlabeled prompts `--k` times at temperature 0.7
(what PPO samples) and once greedily (the reference a `JudgeScorer` compares against). For each reward it prints

- `corr`: correlation of the reward with sign(gold(answer) − gold(reference)) over all k·prompts answers, the
  information a policy gradient step gets about whether an answer beats the reference under gold;
- `E[r | better / tie / worse]`: the mean reward of answers that gold rates above / equal to / below the reference;
- `pair acc`: on pairs of answers to the same prompt that gold tells apart, how often the reward orders them as
  gold does (what online DPO's knockout relies on).

Rewards: judge verdicts vs the reference (`common.JudgeScorer`: the training pool, gpt4_like, the logprob-weighted
gpt4_turbo_like; each with one order or `both_orders`), the gold verdict itself, and the run's reward model.
Results in bench/RESULTS.md ("Reward signal").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from farm.annotators import annotate_pairs
from farm.annotators.synthetic import make_annotator
from farm.io import read_records
from farm.methods.data import prompt_text
from farm.methods.scorers import JudgeScorer, RewardModelScorer
from farm.models.generation import generate
from farm.models.loading import load_causal_lm
from farm.types import Pair
from farm.worlds import tasks


def pair_accuracy(records, samples, Q, score_pair) -> float:
    """Share of same-prompt answer pairs with different gold quality that `score_pair(pairs) → P(b better)` orders
    as gold does (ties in the reward count half)."""
    pairs, truth = [], []
    for i, r in enumerate(records):
        for a in range(len(samples)):
            for b in range(a + 1, len(samples)):
                if Q[a, i] != Q[b, i]:
                    pairs.append(Pair(r["instruction"], samples[a][i], samples[b][i], input=r.get("input", "")))
                    truth.append(Q[b, i] > Q[a, i])
    p = np.asarray(score_pair(pairs), dtype=float)
    return float(np.mean(np.where(p == 0.5, 0.5, (p > 0.5) == np.array(truth))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/learnable")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    recs = read_records(run / "data" / "unlabeled.json")[:args.prompts]
    model, tok = load_causal_lm(str(run / "models" / "sft" / "model"), device="cpu")
    ps = [prompt_text(r, tok, "alpaca") for r in recs]
    ref = generate(model, tok, ps, max_new_tokens=32, greedy=True, batch_size=64).texts
    samples = [generate(model, tok, ps, max_new_tokens=32, temperature=0.7, batch_size=64, seed=s).texts
               for s in range(args.k)]
    gold = [[tasks.quality(r["instruction"], r.get("input", ""), t) for r, t in zip(recs, S)] for S in samples]
    Q = np.array(gold)
    qref = np.array([tasks.quality(r["instruction"], r.get("input", ""), t) for r, t in zip(recs, ref)])
    sign = np.sign(Q - qref)
    print(f"{len(recs)} prompts × {args.k} answers at T=0.7: {100 * (sign > 0).mean():.1f}% better than the greedy "
          f"reference under gold, {100 * (sign == 0).mean():.1f}% tie ({100 * np.mean([[s == f for s, f in zip(S, ref)] for S in samples]):.1f}% "
          f"identical), {100 * (sign < 0).mean():.1f}% worse; mean gold {Q.mean():.3f} vs reference {qref.mean():.3f}")
    print("| reward | corr with gold sign | E[r | better] | E[r | tie] | E[r | worse] | pair acc |")
    print("|---|---|---|---|---|---|")

    def row(name, R, acc):
        R = np.asarray(R)
        print(f"| {name} | {np.corrcoef(R.ravel(), sign.ravel())[0, 1]:.3f} | {R[sign > 0].mean():.3f} | "
              f"{R[sign == 0].mean():.3f} | {R[sign < 0].mean():.3f} | {acc:.3f} |", flush=True)

    refs = {(r["instruction"], r.get("input", "")): f for r, f in zip(recs, ref)}
    for judge in ("gold", "alpacafarm_pool", "gpt4_like", "gpt4_turbo_like"):
        ann = make_annotator(judge, tasks.quality_parts)
        acc = pair_accuracy(recs, samples, Q, lambda pairs, ann=ann: [
            a.preference for a in annotate_pairs(pairs, ann, seed=1, progress=False)])
        for both in (False, True):
            sc = JudgeScorer(ann, lambda rs: [refs[(r["instruction"], r.get("input", ""))] for r in rs],
                             both_orders=both)
            row(f"{judge} verdict vs reference{', both orders' if both else ''}", [sc.score(recs, S) for S in samples],
                acc)
    rm_path = run / "models" / "reward" / "model"
    if rm_path.exists():
        rm = RewardModelScorer(str(rm_path), style="alpaca", device="cpu")
        R = np.array([rm.score(recs, S) for S in samples]) - np.array(rm.score(recs, ref))

        def rm_pairs(pairs):
            recs_ = [{"instruction": p.instruction, "input": p.input} for p in pairs]
            a, b = rm.score(recs_, [p.output_1 for p in pairs]), rm.score(recs_, [p.output_2 for p in pairs])
            return [0.5 if x == y else float(y > x) for x, y in zip(a, b)]

        row("reward model (answer − reference)", R, pair_accuracy(recs, samples, Q, rm_pairs))


if __name__ == "__main__":
    main()
