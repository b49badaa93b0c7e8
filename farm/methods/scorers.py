"""Scorers: (records, responses) → one float each, higher is better. A reward model, a judge (any annotator,
against a reference answer), or a Python function; `RewardSpec` is the config block that says which one an RL
method's reward is, `reward_scorer` builds it. Also best-of-n's selection helpers (`pick_best`, `knockout`), which
best-of-n, online DPO, critique-and-revise and expert iteration share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from farm.errors import FarmError
from farm.methods.data import prompt_text, tokenize_sft


@dataclass
class RewardSpec:
    """The reward of an RL method (PPO, RLOO, GRPO): a reward model, a judge's verdict or a Python function.
    `reward.judge` wins over `reward.function`, which wins over `reward.model`."""

    model: str = ""
    """path of the reward model (a one-label sequence-classification folder)"""
    judge: str = ""
    """an annotator (judge folder, pool, or simulated judge name such as gpt4_like) whose preference for each
    response over the reference policy's answer is the reward (`scorers.JudgeScorer`, in [0, 1]). One judge
    request per response (two with `judge_both_orders`), cached in output_dir/judge_cache.sqlite"""
    judge_length_penalty: float = 0.0
    """λ: a judge reward loses λ per 10 characters the response is longer than the reference answer"""
    judge_both_orders: bool = False
    """ask the judge about each response in both orders and average (2 requests per response)"""
    judge_reference: str = "greedy"
    """what the judge compares each response with: the reference policy's `greedy` answer (asked once per prompt)
    or a fresh `sample` of it at the method's temperature for every batch (the judge cannot be gamed on one pair)"""
    function: str = ""
    """`module:function` with fn(instruction, input, output) → float, e.g. a verifiable reward; the module is
    imported from the current Python path"""


REWARD_RENAMED = {"reward_model": "reward.model", "reward_judge": "reward.judge",
                  **{k: f"reward.{k}" for k in ("judge_length_penalty", "judge_both_orders", "judge_reference")}}
"""the keys PPO and RLOO had flat before the `reward:` block"""


def sequence_rewards(model, input_ids, attention_mask):
    """Scalar model output at the LAST REAL token of each row (per the attention mask). (B, T) → (B,) fp32.

    Goes through the model's own forward (so a DDP-wrapped model syncs its gradients), whose pooling picks the
    last non-pad token; we check that this is the last real token of every row (pad ≠ eos, no pad inside)."""
    from farm.methods.maths import last_token_index, position_ids_from_mask

    pad = getattr(model, "module", model).config.pad_token_id
    if not (last_token_index(input_ids != pad) == last_token_index(attention_mask)).all():
        raise ValueError("a row's last non-pad token is not its last real token (pad == eos, or a pad token "
                         "inside the text?)")
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask))
    return out.logits.squeeze(-1).float()  # (B,)


# ----- scorers: (records, responses) → one float each -----

@runtime_checkable
class Scorer(Protocol):
    """Scores responses to records (instruction, input). Higher is better."""

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]: ...


class RewardModelScorer:
    """A reward model (an HF sequence-classification folder or a loaded model) read at the last real token."""

    def __init__(self, path_or_model, tokenizer=None, *, style: str = "alpaca", max_len: int = 512,
                 batch_size: int = 16, device: str = "auto"):
        if isinstance(path_or_model, (str, Path)):
            from farm.models.loading import load_scalar_model

            path_or_model, tokenizer = load_scalar_model(str(path_or_model), device=device, tokenizer=tokenizer)
        if tokenizer is None:
            raise ValueError("RewardModelScorer needs the tokenizer of a loaded model")
        self.model, self.tokenizer = path_or_model, tokenizer
        self.style, self.max_len, self.batch_size = style, max_len, batch_size

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        try:
            with torch.no_grad():
                for s in range(0, len(responses), self.batch_size):
                    recs = [{**r, "output": o} for r, o in
                            zip(records[s:s + self.batch_size], responses[s:s + self.batch_size])]
                    b = tokenize_sft(self.tokenizer, recs, self.max_len, self.style)
                    r = sequence_rewards(self.model, b["input_ids"].to(device), b["attention_mask"].to(device))
                    out.extend(r.tolist())
        finally:
            self.model.train(was_training)
        return out


class JudgeScorer:
    """An annotator-derived reward: how much a judge (any `Annotator`: an LLM judge folder, a pool, a simulated
    judge) prefers the response to a reference response for the same prompt, in [0, 1] (a verdict 0/1, a
    logprob-weighted probability, 0.5 for a tie or an invalid verdict), minus an optional length penalty.

    - the reference is `reference(records) → texts` (e.g. the reference policy's greedy answers), asked once per
      prompt and cached here;
    - the order shown to the judge is random per pair (seeded), so a position bias is noise, not a signal;
    - `length_penalty` λ subtracts λ · (|response| − |reference|) / 10 (characters): judges that like longer
      answers otherwise teach the policy to pad (AlpacaEval's length-controlled win rate fixes the same bias at
      evaluation time);
    - `fresh_reference`: the reference is asked anew for every batch, `reference(records, seed)` (e.g. a SAMPLE
      of the reference policy), not cached: a judge's persistent taste about one fixed (response, reference) pair
      cannot be learned and exploited when the reference changes every time;
    - `both_orders` asks the judge twice, once in each order, and averages: twice the requests, half the
      variance of a noisy judge's verdict, and no position bias even on one response;
    - verdicts go through `annotate_pairs`, so `cache_path` makes them resumable and free on a re-run.
    `n_requests`, `n_invalid` and `price` count the judge's work."""

    def __init__(self, annotator, reference: Callable[..., list[str]], *, length_penalty: float = 0.0,
                 seed: int = 0, cache_path: str | Path | None = None, both_orders: bool = False,
                 fresh_reference: bool = False):
        self.annotator, self.reference = annotator, reference
        self.length_penalty, self.seed, self.cache_path = length_penalty, seed, cache_path
        self.both_orders, self.fresh_reference = both_orders, fresh_reference
        self._refs: dict[tuple[str, str], str] = {}
        self.n_requests = self.n_invalid = 0
        self.price = 0.0

    def references(self, records: Sequence[dict]) -> list[str]:
        keys = [(r.get("instruction", r.get("prompt", "")), r.get("input", "")) for r in records]
        missing = {k: r for k, r in zip(keys, records) if k not in self._refs}
        if missing:
            self._refs.update(zip(missing, self.reference(list(missing.values()))))
        return [self._refs[k] for k in keys]

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        import numpy as np

        from farm.types import stable_seed

        # randomness from the batch's content, not a call counter: a resumed run asks exactly what it would have
        batch_seed = stable_seed(self.seed, *responses)
        refs = self.reference(records, batch_seed) if self.fresh_reference else self.references(records)
        swap = np.random.default_rng(batch_seed).random(len(records)) < 0.5  # True: the response is shown first
        prefs = [self._ask(records, responses, refs, swap, batch_seed)]
        if self.both_orders:  # the other order, with its own seed (a pool draws its member and flips again)
            prefs.append(self._ask(records, responses, refs, ~swap, batch_seed + 1))
        return [sum(p) / len(p) - self.length_penalty * (len(o) - len(f)) / 10.0
                for *p, o, f in zip(*prefs, responses, refs)]

    def _ask(self, records, responses, refs, swap, batch_seed: int) -> list[float]:
        """P(response preferred over its reference) per record, with the response first where `swap`."""
        from farm.annotators import annotate_pairs
        from farm.types import Pair

        pairs = [Pair(r.get("instruction", r.get("prompt", "")), *((o, f) if s else (f, o)), input=r.get("input", ""),
                      id=f"judge-reward-{batch_seed}-{i}")
                 for i, (r, o, f, s) in enumerate(zip(records, responses, refs, swap))]
        anns = annotate_pairs(pairs, self.annotator, seed=batch_seed % 2**31, cache_path=self.cache_path,
                              progress=False)
        out = []
        for a, s in zip(anns, swap):
            self.n_requests += 1
            self.price += a.price_spent  # what this run paid: 0 for a cached verdict or a repeated pair
            if a.preference is None:
                self.n_invalid += 1
            out.append(0.5 if a.preference is None else (1.0 - a.preference if s else a.preference))
        return out


def scorer_stats(scorer) -> dict[str, Any]:
    """The judge's work behind a `JudgeScorer` reward (requests, invalid verdicts, dollars); {} for other scorers."""
    if not isinstance(scorer, JudgeScorer):
        return {}
    return {"judge_requests": scorer.n_requests, "judge_invalid": scorer.n_invalid, "judge_price": scorer.price}


def reward_scorer(cfg, method: str, ref_model, tokenizer, annotator=None) -> Scorer:
    """The reward of an RL method's config (`cfg.reward`, a `RewardSpec`, plus its prompt_style, temperature,
    max_new_tokens, max_prompt_tokens, output_dir and train.seed/device): a `JudgeScorer` against the reference
    policy's answers for `reward.judge` (`annotator` overrides how the name is loaded, e.g. a world's own simulated
    judge), a `FunctionScorer` for `reward.function`, else a `RewardModelScorer` of `reward.model`."""
    spec: RewardSpec = cfg.reward
    if spec.judge:
        if annotator is None:
            from farm.annotators import load_annotator

            annotator = load_annotator(spec.judge)
        if spec.judge_reference not in ("greedy", "sample"):
            raise FarmError(f"judge_reference must be greedy or sample, got {spec.judge_reference!r}",
                            field="reward.judge_reference")
        sample = spec.judge_reference == "sample"

        def reference(records: Sequence[dict], seed: int | None = None) -> list[str]:
            from farm.models.generation import generate

            prompts = [prompt_text(r, tokenizer, cfg.prompt_style) for r in records]
            return generate(ref_model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, greedy=not sample,
                            temperature=cfg.temperature, batch_size=64, seed=seed,
                            max_prompt_tokens=cfg.max_prompt_tokens).texts

        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        return JudgeScorer(annotator, reference, length_penalty=spec.judge_length_penalty, seed=cfg.train.seed,
                           cache_path=Path(cfg.output_dir) / "judge_cache.sqlite",
                           both_orders=spec.judge_both_orders, fresh_reference=sample)
    if spec.function:
        return FunctionScorer(import_function(spec.function, "reward.function"))
    if not spec.model:
        raise FarmError(f"{method} needs a reward: set `reward.model`, `reward.judge` or `reward.function`",
                        field="reward.model")
    return RewardModelScorer(spec.model, style=cfg.prompt_style, device=cfg.train.device)


def import_function(spec: str, field: str) -> Callable:
    """The function named by 'module:function' (a FarmError naming `field` when it cannot be found)."""
    import importlib

    mod, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), name) if name else None
    except (ImportError, AttributeError) as e:
        raise FarmError(f"cannot import {spec!r}: {e}", field=field, hint="give module:function") from None
    if not callable(fn):
        raise FarmError(f"{spec!r} is not module:function", field=field, hint="e.g. mypackage.rewards:exact_match")
    return fn


class FunctionScorer:
    """Any python function fn(instruction, input, output) -> float, e.g. a world's gold quality."""

    def __init__(self, fn: Callable[[str, str, str], float]):
        self.fn = fn

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        return [float(self.fn(r["instruction"], r.get("input", ""), o)) for r, o in zip(records, responses)]


# ----- selecting among candidates (best-of-n, online DPO, critique-and-revise, expert iteration) -----

def sample_groups(model, tokenizer, records: Sequence[dict], n: int, *, temperature: float, max_new_tokens: int,
                  batch_size: int = 16, style: str = "alpaca", seed: int = 0, max_prompt_tokens: int | None = None,
                  progress: bool = False) -> list[list[str]]:
    """n samples per record (temperature only, one seeded generator), grouped per record."""
    from farm.models.generation import generate

    prompts = [prompt_text(r, tokenizer, style) for r in records for _ in range(n)]
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=batch_size, seed=seed, max_prompt_tokens=max_prompt_tokens, progress=progress).texts
    return [texts[g * n:(g + 1) * n] for g in range(len(records))]


def best_by_score(scorer: Scorer, records: Sequence[dict], groups: Sequence[Sequence[str]]) -> tuple[list[int],
                                                                                                   list[float]]:
    """(index of the best candidate within each group, its score) by `scorer` (ties → the first)."""
    n = len(groups[0])
    scores = scorer.score([r for r in records for _ in range(n)], [t for g in groups for t in g])
    best = pick_best(scores, n)
    return [i - g * n for g, i in enumerate(best)], [scores[i] for i in best]


def pick_best(scores: Sequence[float], n: int) -> list[int]:
    """Index (into the flat list) of the highest score in each consecutive group of n; ties → first.

    >>> pick_best([0.1, 0.9, 0.5, 2.0, 2.0, 1.0], 3)
    [1, 3]
    """
    return [g * n + max(range(n), key=lambda j: (scores[g * n + j], -j)) for g in range(len(scores) // n)]


def knockout(annotator, records: Sequence[dict], candidates: Sequence[Sequence[str]], seed: int = 0,
             cache_path: str | None = None, pick: str = "best") -> list[int]:
    """Winner index per record of a single-elimination tournament among its candidates, judged by `annotator`
    (an Annotator or a judge/pool name; p = P(output_2 better)) through `farm.annotators.annotate_pairs`
    (cached in `cache_path` if given). All matches of a round across records go to the judge in one batch.
    An invalid verdict keeps the first-shown candidate; an odd one out gets a bye. `pick="worst"`: the loser of
    each match goes on (a tournament for the worst candidate; with the same seed its first round is the same
    matches, so a cached judge is asked only for the later rounds)."""
    if pick not in ("best", "worst"):
        raise ValueError(f"pick must be 'best' or 'worst', got {pick!r}")
    import numpy as np

    from farm.annotators import annotate_pairs  # lazily: the judges' stack is not needed for scorer-based BoN
    from farm.types import Pair

    rng = np.random.default_rng(seed)
    alive = [list(range(len(c))) for c in candidates]
    round_ = 0
    while any(len(a) > 1 for a in alive):
        matches, pairs = [], []
        for r, a in enumerate(alive):
            for k in range(0, len(a) - 1, 2):
                i, j = (a[k], a[k + 1]) if rng.random() < 0.5 else (a[k + 1], a[k])  # random order shown
                matches.append((r, i, j))
                rec = records[r]
                pairs.append(Pair(rec["instruction"], candidates[r][i], candidates[r][j], input=rec.get("input", ""),
                                  id=f"bon-{r}-{round_}-{i}-{j}"))
        verdicts = annotate_pairs(pairs, annotator, seed=seed, cache_path=cache_path, progress=False)
        winners: dict[int, list[int]] = {r: [] for r in range(len(alive))}
        for (r, i, j), ann in zip(matches, verdicts):
            p = ann.preference
            second_wins = p is not None and p > 0.5
            winners[r].append(j if second_wins == (pick == "best") else i)
        alive = [winners[r] + (a[-1:] if len(a) % 2 else []) if len(a) > 1 else a for r, a in enumerate(alive)]
        round_ += 1
    return [a[0] for a in alive]
