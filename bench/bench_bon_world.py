"""Best-of-n on the offline task world (farm/worlds/tasks.py): does picking the reward model's favourite of n=16
samples beat a single sample (n=1) under the world's GOLD quality?

Pipeline, all on CPU with a tiny Llama: SFT on the world's demonstrations → reward model on world pairs labelled by
the simulated AlpacaFarm training pool (25% flips) → 16 samples per eval prompt → gold quality of
(a) the first sample (n=1), (b) the RM's pick (BoN-16), (c) gold's own pick (oracle BoN-16, an upper bound).
Differences are paired over prompts; SE = std / sqrt(prompts).

    python bench/bench_bon_world.py --sft-steps 1500 --rm-pairs 10000 --prompts 200   # ~15 min, 2 busy cores

Writes bench/results/bon_world_<rm-data>.json and its block in docs/methods/best_of_n.md.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from farm.methods.best_of_n import best_of_n
from farm.methods.loop import TrainConfig, train_sft
from farm.methods.reward import evaluate_reward_model, train_reward_model
from farm.methods.scorers import FunctionScorer, RewardModelScorer
from farm.models.generation import format_prompt, generate_texts
from farm.models.loading import load_causal_lm, load_scalar_model, save_model
from farm.models.tiny import TinySpec, build_tiny
from farm.types import Pair
from farm.worlds.tasks import build


def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--rm-pairs", type=int, default=3000)
    ap.add_argument("--rm-epochs", type=float, default=2.0)
    ap.add_argument("--rm-lr", type=float, default=1e-3)
    ap.add_argument("--rm-data", choices=["on_policy", "world_pairs"], default="on_policy")
    ap.add_argument("--prompts", type=int, default=120)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    world = build(seed=0, sft=args.sft_steps * 16, preference=args.rm_pairs, unlabeled=10, eval=args.prompts)
    pool = world.annotator("alpacafarm_pool")
    texts = [format_prompt(r["instruction"], r["input"]) + r["output"] for r in world.sft]
    with tempfile.TemporaryDirectory() as d:
        path = build_tiny(texts, Path(d) / "tiny", TinySpec(), seed=0)
        policy, tok = load_causal_lm(str(path), device="cpu")
        sft = train_sft(policy, tok, world.sft, TrainConfig(lr=2e-3, per_device_batch_size=16, epochs=1,
                                                            warmup_ratio=0.05), max_len=128)
        save_model(policy, tok, Path(d) / "sft")
        # preference data: off-policy world pairs (demonstration mix), or on-policy (AlpacaFarm: 2 SFT samples)
        if args.rm_data == "on_policy":
            prompts = [p for p in world.preference[:args.rm_pairs]]
            texts2 = generate_texts(policy, tok, [p for p in prompts for _ in range(2)], max_new_tokens=48,
                                    batch_size=64, seed=7)
            pairs = [Pair(p["instruction"], texts2[2 * i], texts2[2 * i + 1], input=p["input"])
                     for i, p in enumerate(prompts) if texts2[2 * i] != texts2[2 * i + 1]]
        else:
            pairs = world.pairs(args.rm_pairs, seed=1)
        anns = pool.annotate(pairs, seed=0)
        gold_p = [world.quality(a.pair.instruction, a.pair.input, a.pair.output_2)
                  - world.quality(a.pair.instruction, a.pair.input, a.pair.output_1) for a in anns]
        triples = [{"instruction": a.pair.instruction, "input": a.pair.input, "p_chosen": 1.0,
                    "chosen": a.pair.output_2 if a.preference > 0.5 else a.pair.output_1,
                    "rejected": a.pair.output_1 if a.preference > 0.5 else a.pair.output_2,
                    "gold_agrees": (g > 0) == (a.preference > 0.5), "gold_tie": g == 0}
                   for a, g in zip(anns, gold_p) if a.preference is not None and a.preference != 0.5]
        rm, rtok = load_scalar_model(str(Path(d) / "sft"), device="cpu")
        cut = int(0.9 * len(triples))
        train_reward_model(rm, rtok, triples[:cut], TrainConfig(lr=args.rm_lr, per_device_batch_size=16,
                                                               epochs=args.rm_epochs, warmup_ratio=0.05), max_len=128)
        rm_acc = evaluate_reward_model(rm, rtok, triples[cut:], max_len=128)
        # accuracy against GOLD on held-out pairs where gold has a strict preference
        gold_held = [{**t, "chosen": t["chosen"] if t["gold_agrees"] else t["rejected"],
                      "rejected": t["rejected"] if t["gold_agrees"] else t["chosen"]}
                     for t in triples[cut:] if not t["gold_tie"]]
        rm_gold_acc = evaluate_reward_model(rm, rtok, gold_held, max_len=128)
        # one sampling pass; n=1 = the first sample of each group, BoN = RM's pick, oracle = gold's pick
        gold = FunctionScorer(world.quality)
        seen: list[float] = []
        recording = FunctionScorer(lambda i, x, o: seen.append(world.quality(i, x, o)) or seen[-1])
        outs = best_of_n(policy, tok, world.eval, args.n, recording, max_new_tokens=48, batch_size=64, seed=0,
                         progress=True)
        # the same seed gives the same 16 candidates per prompt (tests/test_models.py), now picked by the RM
        rm_outs = best_of_n(policy, tok, world.eval, args.n, RewardModelScorer(rm, rtok, max_len=128),
                            max_new_tokens=48, batch_size=64, seed=0, progress=True)
    n1 = [seen[g * args.n] for g in range(len(world.eval))]
    oracle = [o["score"] for o in outs]
    bon = gold.score(world.eval, [o["output"] for o in rm_outs])
    result = {"world": "tasks seed 0", "prompts": len(world.eval), "n": args.n, "sft_steps": sft["steps"],
              "sft_final_loss": sft["loss"], "rm_train_pairs": cut, "rm_epochs": args.rm_epochs, "rm_heldout_accuracy": rm_acc["accuracy"],
              "rm_heldout_accuracy_se": rm_acc["accuracy_se"],
              "rm_data": args.rm_data, "rm_pairs_labelled": len(triples), "rm_gold_accuracy": rm_gold_acc["accuracy"],
              "rm_gold_accuracy_se": rm_gold_acc["accuracy_se"], "rm_gold_n": rm_gold_acc["n"],
              "pool_gold_agreement": float(np.mean([t["gold_agrees"] for t in triples if not t["gold_tie"]])),
              "gold_n1": mean_se(n1), f"gold_bon{args.n}_rm": mean_se(bon), f"gold_bon{args.n}_oracle": mean_se(oracle),
              "bon_minus_n1": mean_se(np.subtract(bon, n1)), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(result, indent=2))
    from farm import docblocks

    name = f"bon_world_{args.rm_data}"
    docblocks.write_block(docblocks.ROOT / "docs" / "methods" / "best_of_n.md", name, result,
                          f"bench/results/{name}.json", "bench.bench_bon_world:markdown")


def _mean_se(x: list[float], signed: bool = False) -> str:
    m = f"{x[0]:+.3f}" if signed else f"{x[0]:.3f}"
    return f"{m.replace('-', '−')} ± {x[1]:.3f}"


def markdown(d: dict) -> str:
    """docs/methods/best_of_n.md's table for one RM training set (bench/results/bon_world_<rm-data>.json)."""
    on_policy = d.get("rm_data", "world_pairs") == "on_policy"
    data = (f"{d['rm_train_pairs']:,} on-policy SFT-sample pairs" if on_policy
            else f"{d['rm_train_pairs']:,} off-policy world pairs") + ", pool labels"
    gold = (f"{100 * d['rm_gold_accuracy']:.1f}% ± {100 * d['rm_gold_accuracy_se']:.1f}% (n={d['rm_gold_n']})"
            if "rm_gold_accuracy" in d else "not measured")
    return "\n".join([
        "| RM training data | RM acc. vs pool labels | RM acc. vs gold | gold n=1 | gold BoN-16 (RM) | BoN − n=1 | "
        "oracle BoN-16 (gold picks) |", "|---|---|---|---|---|---|---|",
        f"| {data} | {100 * d['rm_heldout_accuracy']:.1f}% ± {100 * d['rm_heldout_accuracy_se']:.1f}% | {gold} | "
        f"{_mean_se(d['gold_n1'])} | {_mean_se(d['gold_bon16_rm'])} | {_mean_se(d['bon_minus_n1'], True)} | "
        f"{_mean_se(d['gold_bon16_oracle'])} |"])


if __name__ == "__main__":
    main()
