"""A tiny policy SFT-trained on the world beats the untrained one under gold, and the simulated judges agree.

Slow (a few minutes on 2 CPU cores): `python -m pytest -m slow tests/test_world_sft.py -s` prints the win rates,
including against the world's fixed baseline policy.
"""

from __future__ import annotations

import numpy as np
import pytest

from farm.types import Pair
from farm.worlds.tasks import build


def _outputs(model, tok, prompts) -> list[str]:
    from farm.methods.data import prompt_text
    from farm.models.generation import generate

    texts = [prompt_text(r, tok, "alpaca") for r in prompts]
    return generate(model, tok, texts, max_new_tokens=32, greedy=True, batch_size=50).texts


def _win_rate(world, name: str, prompts, base: list[str], new: list[str]) -> tuple[float, float]:
    """Win rate of `new` over `base` (output_1 = base, as AlpacaEval shows the baseline first) ± SE."""
    pairs = [Pair(p["instruction"], b, n, input=p["input"]) for p, b, n in zip(prompts, base, new)]
    p = np.array([a.preference for a in world.annotator(name).annotate(pairs, seed=0)], dtype=float)
    return float(p.mean()), float(p.std(ddof=1) / np.sqrt(len(p)))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # minutes on an idle 2-core machine; much longer on a busy one
def test_tiny_sft_policy_beats_untrained_under_gold_and_judges():
    from farm.methods.data import prompt_text
    from farm.methods.loop import TrainConfig, train_sft
    from farm.models.tiny import TinySpec, build_tiny_lm, train_tokenizer

    world = build(0, sft=2000, preference=0, unlabeled=0, eval=200)
    tok = train_tokenizer([prompt_text(r, None, "alpaca") + r["output"] for r in world.sft], 768)
    model = build_tiny_lm(tok, TinySpec(), seed=0)
    prompts = world.eval
    untrained = _outputs(model, tok, prompts)
    tc = TrainConfig(lr=3e-3, epochs=4.0, per_device_batch_size=32, device="cpu", progress=False)
    train_sft(model, tok, world.sft, tc, max_len=160)
    trained = _outputs(model, tok, prompts)
    baseline = [b["output"] for b in world.baseline_outputs(prompts)]

    q = np.array([world.quality(p["instruction"], p["input"], o) for p, o in zip(prompts, trained)])
    print(f"\nSFT gold quality {q.mean():.3f}; baseline "
          f"{np.mean([world.quality(p['instruction'], p['input'], o) for p, o in zip(prompts, baseline)]):.3f}")
    for name in ("gold", "eval_pool", "human"):
        win, se = _win_rate(world, name, prompts, untrained, trained)
        print(f"SFT vs untrained under {name}: {100 * win:.1f} ± {100 * se:.1f}%")
        assert win > 0.5 + 2 * se, name
    for name in ("gold", "eval_pool", "human"):
        win, se = _win_rate(world, name, prompts, baseline, trained)
        print(f"SFT vs the world's baseline under {name}: {100 * win:.1f} ± {100 * se:.1f}%")
