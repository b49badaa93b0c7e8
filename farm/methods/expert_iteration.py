"""Expert iteration: alternate best-of-n on unlabeled prompts (the "expert") and SFT of the policy on the
winners (the "apprentice"), for a number of rounds.

References: Anthony et al. 2017 (https://arxiv.org/abs/1705.08439); AlpacaFarm's expert iteration baseline
(https://arxiv.org/abs/2305.14387, §4); ReST (Gulcehre et al. 2023, https://arxiv.org/abs/2308.08998) and
RAFT (Dong et al. 2023, https://arxiv.org/abs/2304.06767) are close variants. Details: docs/methods/expert_iteration.md.

Departures: every round fine-tunes the previous round's policy (AlpacaFarm did one round from the SFT model);
each round uses a fresh, seeded slice of the prompts; a finished round is saved and skipped on re-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from farm.methods.data import read_instructions
from farm.methods.loop import TrainConfig, train_sft, write_metrics
from farm.methods.scorers import RewardModelScorer, Scorer, best_by_score, sample_groups


@dataclass
class Config:
    """`farm train expert_iteration --config configs/train_expert_iteration.yaml`. Defaults fit a tiny model on
    CPU (`farm compare`); AlpacaFarm's 7B run: one round, n 16, SFT lr 2e-5 for 1 epoch."""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str
    """initial policy folder (usually the SFT model)"""
    prompts: str
    """unlabeled instructions (JSON/JSONL with instruction, input?)"""
    reward_model: str
    """sequence-classification folder that picks the best of n"""
    output_dir: str
    """round_<k>/ (winners.json, model) and the final output_dir/model go here"""
    rounds: int = 1
    """best-of-n → SFT rounds"""
    n: int = 8
    """candidates per prompt (AlpacaFarm: 16)"""
    prompts_per_round: int = 400
    """prompts used per round, a seeded slice of `prompts` (0 = all)"""
    temperature: float = 1.0
    """sampling temperature"""
    max_new_tokens: int = 128
    """response length limit"""
    gen_batch_size: int = 16
    """sequences per generation batch"""
    max_len: int = 160
    """SFT prompt + response tokens (512 for real models)"""
    prompt_style: str = "alpaca"
    """prompt format: alpaca or chat"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, epochs=2.0, per_device_batch_size=32))
    """SFT settings of each round (tiny models: lr 1e-3, 2 epochs; a 7B: lr 2e-5, 1 epoch)"""


def expert_iteration(model, tokenizer, prompts: Sequence[dict], scorer: Scorer, *, rounds: int, n: int,
                     tc: TrainConfig, prompts_per_round: int = 0, temperature: float = 1.0,
                     max_new_tokens: int = 128, gen_batch_size: int = 16, max_len: int = 512,
                     style: str = "alpaca", out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run `rounds` of best-of-n + SFT on `model` in place. With out_dir, each finished round is saved to
    out_dir/round_<k>/ (winners.json, model) and skipped when the function runs again."""
    import numpy as np

    from farm.io import read_model_outputs, write_model_outputs
    from farm.models.loading import is_complete_checkpoint, load_causal_lm, save_model

    history = []
    for k in range(rounds):
        rdir = Path(out_dir) / f"round_{k}" if out_dir is not None else None
        if rdir is not None and is_complete_checkpoint(rdir / "model"):
            model, tokenizer = load_causal_lm(str(rdir / "model"), device=str(next(model.parameters()).device))
            history.append({"round": k, "resumed": True})
            continue
        order = np.random.default_rng([tc.seed, k]).permutation(len(prompts))
        batch = [prompts[i] for i in order[:prompts_per_round or len(prompts)]]
        if rdir is not None and (rdir / "winners.json").exists():
            winners = read_model_outputs(rdir / "winners.json")
        else:  # the expert: the scorer's best of n samples per prompt
            groups = sample_groups(model, tokenizer, batch, n, temperature=temperature, max_new_tokens=max_new_tokens,
                                   batch_size=gen_batch_size, style=style, seed=tc.seed * 1000 + k)
            best, scores = best_by_score(scorer, batch, groups)
            winners = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": g[b],
                        "generator": f"expert_iteration_round_{k}", "score": sc, "candidates": n}
                       for r, g, b, sc in zip(batch, groups, best, scores)]
            if rdir is not None:
                write_model_outputs(rdir / "winners.json", winners)
        result = train_sft(model, tokenizer, winners, tc, max_len=max_len, style=style, out_dir=rdir)
        model = result["model"]
        scores = [w["score"] for w in winners if w.get("score") is not None]
        history.append({"round": k, "sft_loss": result["loss"], "steps": result["steps"],
                        "mean_best_score": sum(scores) / len(scores) if scores else None})
        if rdir is not None:
            save_model(model, tokenizer, rdir / "model")
    return {"rounds": history, "model": model, "tokenizer": tokenizer}


def run(cfg: Config) -> dict[str, Any]:
    """Read prompts, run the rounds from cfg.policy with cfg.reward_model, save output_dir/model."""
    from farm.models.loading import load_causal_lm, save_model

    prompts = read_instructions(cfg.prompts)
    model, tok = load_causal_lm(cfg.policy, device=cfg.train.device, dtype=cfg.train.dtype)
    scorer = RewardModelScorer(cfg.reward_model, device=cfg.train.device, style=cfg.prompt_style, max_len=cfg.max_len)
    out = expert_iteration(model, tok, prompts, scorer, rounds=cfg.rounds, n=cfg.n, tc=cfg.train,
                           prompts_per_round=cfg.prompts_per_round, temperature=cfg.temperature,
                           max_new_tokens=cfg.max_new_tokens, gen_batch_size=cfg.gen_batch_size,
                           max_len=cfg.max_len, style=cfg.prompt_style, out_dir=cfg.output_dir)
    metrics = {"rounds": out["rounds"],
               "model_dir": str(save_model(out["model"], out["tokenizer"], Path(cfg.output_dir) / "model"))}
    write_metrics(cfg.output_dir, metrics)
    return metrics
