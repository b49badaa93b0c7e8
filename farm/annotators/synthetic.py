"""Simulated judges: Bradley–Terry on a (partial, noisy) view of a world's gold quality, plus length and position
terms, calibrated to the human and LLM-judge rows of AlpacaEval's evaluator leaderboard.

For a pair (o1, o2) a judge computes the logit that output_2 wins

    u = beta · (v(o2) − v(o1)) + length · tanh((|o2| − |o1|) / length_scale) − position + opinion · z

- v is the judge's *view* of gold quality: the full gold quality, except on a share (1 − attention) of pairs
  where the judge does not check correctness and sees only whether each output has an answer and how much
  filler it carries (a "partial view": a skimming judge);
- |o| is the length in characters (as AlpacaEval measures it); position > 0 favours output_1;
- z ~ N(0, 1) is drawn once per pair and judge (and person, `draw`) but not per `seed`: the judge's own
  persistent taste. It makes LLM-like judges self-consistent across seeds while disagreeing with humans.

The verdict is sampled from sigmoid(u) with `pair_rng(seed, pair, name#draw)` (deterministic, independent of
batching), or returned as the probability itself when `soft` (like AlpacaEval's logprob-weighted judges).
Identical outputs are a tie (0.5). Several independent human draws: `make_annotator("human", q, seed=k)` is
person k (k = 0, 1, 2, …); `annotate(pairs, seed)` is the run seed.

`PRESETS`, `POOL_LENGTH` and `POOL_POSITION` hold the fitted parameters (`farm world calibrate --refit` refits
them and prints target vs achieved; docs/world.md has the table). Pools:
`alpacafarm_pool` (13 members like AlpacaFarm's annotator_pool_v0 — 5 GPT-4-like, 4 ChatGPT-like,
4 Davinci-003-like variants — one random member per pair, then 25% label flips, for training) and `eval_pool`
(the same members, no flips). `gold` prefers the higher gold quality (ties 0.5); `longest` the longer output.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from farm.annotators.noise import flip
from farm.errors import FarmError
from farm.types import Annotation, Annotator, Pair, pair_rng, stable_seed

QualityFn = Callable[[str, str, str], dict]  # (instruction, input, output) → {"quality", "core_score", "penalty"}


@dataclass(frozen=True)
class JudgeParams:
    """Parameters of a simulated judge (see the module docstring for the formula)."""

    beta: float = 6.0
    """logit per unit of viewed-quality difference: higher = sharper, more consistent with gold"""
    length: float = 0.0
    """logit toward the longer output at a large length gap (> 0 likes longer outputs)"""
    position: float = 0.0
    """logit toward output_1 (> 0 prefers the first output shown)"""
    attention: float = 1.0
    """share of pairs whose correctness the judge checks; on the rest it sees only form and fillers"""
    opinion: float = 0.0
    """sd of the judge's persistent per-pair logit noise (its own taste, the same for every seed)"""
    soft: bool = False
    """return P(output_2 wins) instead of a sampled 0/1 verdict (like logprob-weighted judges)"""
    length_scale: float = 10.0
    """characters over which the length term saturates (tanh)"""


# Fitted by `farm world calibrate` on 4,000 pairs of the tasks world (seed 0); targets are the rows of AlpacaEval's
# evaluators_leaderboard.csv named in TARGETS. `attention`, `opinion` and `soft` are chosen by hand per judge
# (its character); beta, length and position are fitted to (human agreement, P(prefer longer), P(prefer first)).
PRESETS: dict[str, JudgeParams] = {
    "human": JudgeParams(beta=2.501, length=0.499, position=0.12),
    "gpt4_like": JudgeParams(beta=3.76, length=0.849, position=0.053, opinion=0.5),
    "gpt4_turbo_like": JudgeParams(beta=0.959, length=0.087, position=0.127, opinion=0.5, soft=True),
    "gpt4_greedy_like": JudgeParams(beta=3.298, length=0.273, position=0.239, opinion=0.5),
    "claude_like": JudgeParams(beta=2.73, length=0.752, position=-0.002, attention=0.9, opinion=0.7),
    "chatgpt_like": JudgeParams(beta=1.25, length=0.4, position=-0.054, attention=0.7, opinion=1.0),
    "davinci003_like": JudgeParams(beta=2.4, length=0.981, position=-0.097, attention=0.8, opinion=0.8),
    "llama3_70b_like": JudgeParams(beta=2.646, length=1.673, position=-0.09, attention=0.9, opinion=0.6),
}

# (row of evaluators_leaderboard.csv, human agreement %, P(prefer longer), P(prefer first)) — copied from
# tatsu-lab/alpaca_eval src/alpaca_eval/leaderboards/evaluators/evaluators_leaderboard.csv (also in
# ../shared/data/alpaca_eval/leaderboards/evaluators/); used when that file is absent.
TARGETS: dict[str, tuple[str, float, float, float]] = {
    "human": ("humans", 65.66, 0.636, 0.518),
    "gpt4_like": ("alpaca_eval_gpt4", 69.17, 0.683, 0.501),
    "gpt4_turbo_like": ("weighted_alpaca_eval_gpt4_turbo", 65.73, 0.606, 0.528),
    "gpt4_greedy_like": ("alpaca_farm_greedy_gpt4", 66.44, 0.598, 0.536),
    "claude_like": ("claude", 65.32, 0.661, 0.494),
    "chatgpt_like": ("chatgpt", 57.28, 0.591, 0.489),
    "davinci003_like": ("text_davinci_003", 64.08, 0.697, 0.473),
    "llama3_70b_like": ("alpaca_eval_llama3_70b_fn", 67.53, 0.791, 0.479),
    "alpacafarm_pool": ("alpaca_farm", 57.81, 0.590, 0.510),
    "longest": ("longest", 62.19, 1.0, 0.417),
}

# AlpacaFarm's annotator_pool_v0 has 5 GPT-4, 4 ChatGPT and 4 Davinci-003 prompts/settings. Our members are the
# three presets shifted in position and scaled in length bias, as different prompts and batch sizes did.
POOL_MEMBERS: tuple[tuple[str, str, float, float], ...] = (
    ("gpt4_1", "gpt4_like", 0.0, 1.0), ("gpt4_2", "gpt4_like", 0.2, 0.8), ("gpt4_3", "gpt4_like", -0.2, 1.2),
    ("gpt4_4", "gpt4_like", 0.1, 1.4), ("gpt4_5", "gpt4_like", -0.1, 0.6),
    ("chatgpt_1", "chatgpt_like", 0.0, 1.0), ("chatgpt_2", "chatgpt_like", 0.25, 1.3),
    ("chatgpt_3", "chatgpt_like", -0.25, 0.7), ("chatgpt_4", "chatgpt_like", 0.1, 1.0),
    ("davinci003_1", "davinci003_like", 0.0, 1.0), ("davinci003_2", "davinci003_like", 0.2, 0.8),
    ("davinci003_3", "davinci003_like", -0.2, 1.2), ("davinci003_4", "davinci003_like", -0.1, 1.0),
)
TRAIN_FLIP = 0.25  # AlpacaFarm's training pool flips 25% of labels (the human inter-annotator variability)
# Fitted with PRESETS: a scale of every member's length bias and a shift of their position bias, so that the
# training pool's P(prefer longer) and P(prefer first) match AlpacaEval's `alpaca_farm` row (the flips pull both
# toward 0.5, so members must be a bit more biased than the presets they vary).
POOL_LENGTH, POOL_POSITION = 1.233, 0.187


def _quality_id(quality_fn: QualityFn | None) -> str:
    """Names the quality function and its world's VERSION, so cached verdicts expire when the world changes."""
    module = getattr(quality_fn, "__module__", "?")
    version = getattr(sys.modules[module], "VERSION", "") if module in sys.modules else ""
    return f"{module}.{getattr(quality_fn, '__qualname__', '?')}@{version}"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class SyntheticJudge:
    """A simulated judge over a world's quality function (an `Annotator`)."""

    name: str
    quality_fn: QualityFn
    params: JudgeParams = field(default_factory=JudgeParams)
    draw: int = 0
    """which independent person/instance this is (humans: different draws disagree like different people)"""

    def identity(self) -> str:
        return json.dumps({"synthetic": self.name, "draw": self.draw, "quality": _quality_id(self.quality_fn),
                           **asdict(self.params)}, sort_keys=True)

    def _view(self, pair: Pair, output: str, checks: bool) -> float:
        parts = self.quality_fn(pair.instruction, pair.input, output)
        if checks:
            return parts["quality"]
        # skimming: sees that an answer is there (or not) and the padding gold would charge, not correctness
        return max(0.0, (0.7 if parts["core_score"] > 0 else 0.0) - parts["penalty"])

    def features(self, pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(viewed quality gap v2 − v1, length feature, persistent noise z) per pair; the logit is
        beta·gap + length·feature − position + opinion·z."""
        p = self.params
        gap, ell, z = np.zeros(len(pairs)), np.zeros(len(pairs)), np.zeros(len(pairs))
        for i, pair in enumerate(pairs):
            rng = pair_rng(0, pair, f"{self.name}#{self.draw}:taste")  # seed-independent on purpose
            u_attn, z[i] = rng.random(), rng.standard_normal()
            checks = u_attn < p.attention
            gap[i] = self._view(pair, pair.output_2, checks) - self._view(pair, pair.output_1, checks)
            ell[i] = math.tanh((len(pair.output_2) - len(pair.output_1)) / p.length_scale)
        return gap, ell, z

    def probabilities(self, pairs: Sequence[Pair]) -> np.ndarray:
        """P(output_2 wins) per pair under this judge (before sampling the verdict)."""
        p = self.params
        gap, ell, z = self.features(pairs)
        prob = _sigmoid(p.beta * gap + p.length * ell - p.position + p.opinion * z)
        same = np.array([pr.output_1 == pr.output_2 for pr in pairs], dtype=bool)
        prob[same] = 0.5
        return prob

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        probs = self.probabilities(pairs)
        out = []
        for pair, prob in zip(pairs, probs):
            if self.params.soft or prob == 0.5:
                pref = float(prob)
            else:
                pref = float(pair_rng(seed, pair, f"{self.name}#{self.draw}").random() < prob)
            out.append(Annotation(pair=pair, preference=pref, annotator=self.name,
                                  meta={"p_model": round(float(prob), 6), "draw": self.draw}))
        return out


@dataclass
class RuleJudge:
    """Deterministic reference judges: `gold` (higher gold quality wins) and `longest` (longer output wins)."""

    name: str
    quality_fn: QualityFn | None = None

    def identity(self) -> str:
        return f"rule:{self.name}" + (f"<{_quality_id(self.quality_fn)}>" if self.name == "gold" else "")

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        out = []
        for pair in pairs:
            if self.name == "gold":
                a = self.quality_fn(pair.instruction, pair.input, pair.output_1)["quality"]
                b = self.quality_fn(pair.instruction, pair.input, pair.output_2)["quality"]
            else:
                a, b = len(pair.output_1), len(pair.output_2)
            out.append(Annotation(pair=pair, preference=0.5 if a == b else float(b > a), annotator=self.name))
        return out


@dataclass
class SyntheticPool:
    """One member per pair, drawn uniformly with `pair_rng(seed, pair, name)` (AlpacaFarm's per-example member)."""

    name: str
    members: list[Annotator]

    def identity(self) -> str:
        return json.dumps({"pool": self.name, "members": [m.identity() for m in self.members]})

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        # the draw depends on the members, not the pool's name: a flipped training pool and the evaluation
        # pool over the same members pick the same member for a pair
        salt = f"pool:{stable_seed(*(m.identity() for m in self.members))}"
        which = [int(pair_rng(seed, p, salt).integers(len(self.members))) for p in pairs]
        out: list[Annotation | None] = [None] * len(pairs)
        for k, member in enumerate(self.members):
            idx = [i for i, w in enumerate(which) if w == k]
            for i, ann in zip(idx, member.annotate([pairs[i] for i in idx], seed=seed)):
                out[i] = replace(ann, annotator=self.name, meta={**ann.meta, "member": member.name})
        return out  # type: ignore[return-value]


def pool_members(quality_fn: QualityFn, presets: dict[str, JudgeParams] | None = None,
                 length_scale: float | None = None, position_shift: float | None = None) -> list[SyntheticJudge]:
    """The 13 members of AlpacaFarm-like pools: their length biases scaled by `length_scale` (default
    POOL_LENGTH), their position biases shifted by `position_shift` (default POOL_POSITION)."""
    presets = presets or PRESETS
    scale = POOL_LENGTH if length_scale is None else length_scale
    shift = POOL_POSITION if position_shift is None else position_shift
    return [SyntheticJudge(name, quality_fn, replace(presets[base], position=presets[base].position + dpos + shift,
                                                     length=presets[base].length * lmul * scale))
            for name, base, dpos, lmul in POOL_MEMBERS]


ANNOTATOR_NAMES = ("gold", "longest", *PRESETS, "alpacafarm_pool", "eval_pool")


def make_annotator(name: str, quality_fn: QualityFn, seed: int = 0, **overrides) -> Annotator:
    """A simulated annotator by name (see ANNOTATOR_NAMES). `seed` picks the person/instance (`draw`);
    `overrides` replace JudgeParams fields of a preset."""
    if name in ("gold", "longest"):
        return RuleJudge(name, quality_fn)
    if name in ("alpacafarm_pool", "eval_pool"):
        pool = SyntheticPool(name, pool_members(quality_fn))
        return pool if name == "eval_pool" else flip(pool, TRAIN_FLIP)
    if name not in PRESETS:
        raise FarmError(f"unknown simulated annotator '{name}'", field="preset",
                        hint=f"known: {', '.join(ANNOTATOR_NAMES)}")
    known = {f.name for f in fields(JudgeParams)}
    bad = set(overrides) - known
    if bad:
        raise FarmError(f"unknown judge parameter(s) {sorted(bad)}", hint=f"known: {', '.join(sorted(known))}")
    return SyntheticJudge(name, quality_fn, replace(PRESETS[name], **overrides), draw=seed)


def build_synthetic(config: dict, seed: int = 0, quality_fn: QualityFn | None = None) -> Annotator:
    """The annotator for a judge config with `backend: synthetic`, over `quality_fn` (a world's gold quality).

    Keys: backend ("synthetic"), world (default "tasks"), preset (a name in ANNOTATOR_NAMES), draw (person,
    default `seed`), flip (an extra label-flip rate), and any JudgeParams field to override the preset.

    Without `quality_fn`, the named world's `quality_parts` is used if that world's module is already imported:
    this module never imports a world (the worlds import it). `farm.annotators.load_annotator` imports the
    world a judge folder names; a world's own `annotator(name)` passes its quality function in.

    >>> from farm.worlds.tasks import quality_parts
    >>> j = build_synthetic({"backend": "synthetic", "world": "tasks", "preset": "gpt4_like", "flip": 0.1},
    ...                     quality_fn=quality_parts)
    >>> j.name
    'gpt4_like+flip(0.1)'
    """
    from farm.worlds import WORLDS  # the table of world names (a module that imports nothing)

    cfg = dict(config)
    backend = cfg.pop("backend", "synthetic")
    if backend != "synthetic":
        raise FarmError(f"build_synthetic got backend '{backend}'", field="backend", hint="expected 'synthetic'")
    cfg.pop("name", None)
    world = cfg.pop("world", "tasks")
    if world not in WORLDS:
        raise FarmError(f"unknown world '{world}'", field="world", hint=f"known: {', '.join(WORLDS)}")
    preset = cfg.pop("preset", None)
    if preset is None:
        raise FarmError("a synthetic judge needs a preset", field="preset", hint=f"one of {', '.join(ANNOTATOR_NAMES)}")
    draw = int(cfg.pop("draw", seed))
    extra_flip = float(cfg.pop("flip", 0.0))
    if quality_fn is None:
        quality_fn = world_quality(world)
    if cfg and preset not in PRESETS:
        raise FarmError(f"parameters {sorted(cfg)} only apply to single judges, not '{preset}'", field=next(iter(cfg)))
    annotator = make_annotator(preset, quality_fn, seed=draw, **cfg)
    return flip(annotator, extra_flip) if extra_flip else annotator


def world_quality(world: str) -> QualityFn:
    """The gold quality function of a world whose module is already imported (FarmError otherwise)."""
    from farm.worlds import WORLDS

    module = sys.modules.get(WORLDS.get(world, ""))
    if module is None:
        raise FarmError(f"world '{world}' is not loaded", field="world",
                        hint="pass quality_fn=, or load the judge with farm.annotators.load_annotator")
    return module.quality_parts
