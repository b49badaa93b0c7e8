"""Reward model on real human preferences: Anthropic HH-RLHF harmless-base test split (2,312 chosen/rejected
dialogues). A tiny Llama (tokenizer trained on the training dialogues, random init, no SFT stage) is trained with
farm.methods.reward on the first N pairs for a few minutes on CPU and scored on the held-out rest.

    python bench/bench_rm_hh.py [--train 2000] [--epochs 1]   # a few minutes on 2 idle CPU cores

Prints and writes bench/results/rm_hh.json and its block in docs/methods/reward.md. Reference point: chance is 50%; large RMs reach ~70% on HH.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from farm.data import shared_data_dir
from farm.methods.data import read_preferences
from farm.methods.loop import TrainConfig
from farm.methods.reward import evaluate_reward_model, train_reward_model
from farm.models.loading import load_scalar_model
from farm.models.tiny import TinySpec, build_tiny


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-len", type=int, default=192)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = shared_data_dir()
    if root is None:
        raise SystemExit("../shared/data is absent")
    triples = read_preferences(root / "hh_rlhf" / "harmless-base-test.jsonl.gz")
    train, heldout = triples[:args.train], triples[args.train:]
    texts = [t["prompt"] + t["chosen"] for t in train] + [t["rejected"] for t in train]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        path = build_tiny(texts, Path(d) / "tiny", TinySpec(n_layers=2, hidden=96, heads=4, intermediate=256,
                                                             vocab_size=1024, max_positions=args.max_len), seed=0)
        model, tok = load_scalar_model(str(path), device="cpu")
        before = evaluate_reward_model(model, tok, heldout, max_len=args.max_len)
        tc = TrainConfig(lr=args.lr, per_device_batch_size=16, epochs=args.epochs, warmup_ratio=0.05, seed=0)
        r = train_reward_model(model, tok, train, tc, max_len=args.max_len)
        after = evaluate_reward_model(model, tok, heldout, max_len=args.max_len)
    result = {"data": "hh_rlhf/harmless-base-test.jsonl.gz", "n_train": len(train), "n_heldout": after["n"],
              "heldout_accuracy": after["accuracy"], "heldout_accuracy_se": after["accuracy_se"],
              "heldout_loss": after["loss"], "accuracy_at_init": before["accuracy"], "train_steps": r["steps"],
              "final_train_loss": r["loss"], "params": sum(p.numel() for p in model.parameters()),
              "seconds": round(time.time() - t0, 1), "args": vars(args)}
    print(json.dumps(result, indent=2))
    from farm import docblocks

    docblocks.write_block(docblocks.ROOT / "docs" / "methods" / "reward.md", "rm_hh", result,
                          "bench/results/rm_hh.json", "bench.bench_rm_hh:markdown")


def markdown(d: dict) -> str:
    """The block in docs/methods/reward.md (a pure function of bench/results/rm_hh.json)."""
    a = d["args"]
    return (f"`python bench/bench_rm_hh.py --train {a['train']} --epochs {a['epochs']:g}`: {d['params']:,} "
            f"parameters, {d['n_train']:,} training pairs, {d['train_steps']} steps in {d['seconds']:.0f} s on one "
            f"busy CPU core, max {a['max_len']} tokens: held-out accuracy **{100 * d['heldout_accuracy']:.1f}% ± "
            f"{100 * d['heldout_accuracy_se']:.1f}%** on the other {d['n_heldout']} pairs "
            f"({100 * d['accuracy_at_init']:.0f}% at init).")


if __name__ == "__main__":
    main()
