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
them and prints target vs achieved; docs/world.md has the table). Which simulated judges and pools exist is data:
the folders of annotator_prompts/ with `backend: synthetic` (gold, longest, human, gpt4_like, ...) and the pools
of them (`ANNOTATOR_NAMES`; docs/annotators.md). `alpacafarm_pool` (13 members like AlpacaFarm's
annotator_pool_v0 — 5 GPT-4-like, 4 ChatGPT-like, 4 Davinci-003-like variants — one random member per pair, then
25% label flips, for training) and `eval_pool` (the same members, no flips). `gold` prefers the higher gold
quality (ties 0.5); `longest` the longer output. `make_annotator(name, quality_fn, seed)` loads a folder over a
world's quality function (a world's `annotator(name)`); this module imports no world.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from farm.annotators.folders import find_folder, is_simulated, load_folder, simulated_names
from farm.annotators.noise import flip
from farm.annotators.pool import Pool
from farm.config import read_yaml
from farm.errors import FarmError
from farm.types import Annotation, Annotator, Pair, pair_rng

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

# Fitted with PRESETS: a scale of every member's length bias and a shift of their position bias, so that the
# training pool's P(prefer longer) and P(prefer first) match AlpacaEval's `alpaca_farm` row (the flips pull both
# toward 0.5, so members must be a bit more biased than the presets they vary). Which members, their own shifts
# and scales and the training pool's flips are data: annotator_prompts/alpacafarm_pool/config.yaml.
POOL_LENGTH, POOL_POSITION = 1.233, 0.187
RULES = ("gold", "longest")
TRAIN_POOL = "alpacafarm_pool"


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


def SyntheticPool(name: str, members: Sequence[Annotator]) -> Pool:
    """AlpacaFarm's pool over `members`: one uniformly per pair, seeded by the members (`Pool`, draw alpacafarm)."""
    return Pool(name, members, draw="alpacafarm")


def member_params(base: JudgeParams, position: float, length: float, position_shift: float = POOL_POSITION,
                  length_scale: float = POOL_LENGTH) -> JudgeParams:
    """A pool member's parameters: `base` with its position bias shifted by `position` (and the pools'
    `position_shift`) and its length bias scaled by `length` (and the pools' `length_scale`)."""
    return replace(base, position=base.position + position + position_shift, length=base.length * length * length_scale)


def _pool_table(pool: str = TRAIN_POOL) -> tuple[tuple[str, str, float, float], ...]:
    """(member name, preset, pool_position, pool_length) of each member of a pool folder of simulated judges."""
    folder = find_folder(pool)
    if folder is None:
        return ()
    out = []
    for m in read_yaml(folder / "config.yaml").get("members", []):
        over = m.get("overrides", {})
        judge = find_folder(m["judge"], folder)
        preset = over.get("preset") or (read_yaml(judge / "config.yaml").get("preset") if judge else m["judge"])
        out.append((over.get("name", preset), preset, float(over.get("pool_position", 0.0)),
                    float(over.get("pool_length", 1.0))))
    return tuple(out)


def _pool_flip(pool: str = TRAIN_POOL) -> float:
    folder = find_folder(pool)
    return float((read_yaml(folder / "config.yaml").get("noise") or {}).get("flip", 0.0)) if folder else 0.0


# AlpacaFarm's annotator_pool_v0 has 5 GPT-4, 4 ChatGPT and 4 Davinci-003 prompts/settings. Our members are the
# three presets shifted in position and scaled in length bias, as different prompts and batch sizes did.
POOL_MEMBERS: tuple[tuple[str, str, float, float], ...] = _pool_table()
TRAIN_FLIP = _pool_flip()  # AlpacaFarm's training pool flips 25% of labels (the human inter-annotator variability)
ANNOTATOR_NAMES = simulated_names()  # the folders of annotator_prompts/ with backend: synthetic, and their pools


def pool_members(quality_fn: QualityFn, presets: dict[str, JudgeParams] | None = None,
                 length_scale: float | None = None, position_shift: float | None = None) -> list[SyntheticJudge]:
    """The 13 members of AlpacaFarm-like pools (POOL_MEMBERS): their length biases scaled by `length_scale`
    (default POOL_LENGTH), their position biases shifted by `position_shift` (default POOL_POSITION)."""
    presets = presets or PRESETS
    scale = POOL_LENGTH if length_scale is None else length_scale
    shift = POOL_POSITION if position_shift is None else position_shift
    return [SyntheticJudge(name, quality_fn, member_params(presets[base], dpos, lmul, shift, scale))
            for name, base, dpos, lmul in POOL_MEMBERS]


def make_annotator(name: str, quality_fn: QualityFn, seed: int = 0, **overrides) -> Annotator:
    """A simulated annotator by name: the folder annotator_prompts/<name>/ (see ANNOTATOR_NAMES: a judge with
    `backend: synthetic`, or a pool of them) over `quality_fn`. `seed` picks the person/instance (`draw`);
    `overrides` replace JudgeParams fields of a preset. The code presets (RULES, PRESETS) also load without a
    folder."""
    folder = find_folder(name) if "/" not in name else None
    if folder is not None and is_simulated(folder):
        return load_folder(folder, overrides, synthetic=lambda cfg, draw: build_synthetic(cfg, draw, quality_fn),
                           seed=seed)
    if name in RULES or name in PRESETS:
        return build_synthetic({"preset": name, **overrides}, seed, quality_fn)
    raise FarmError(f"unknown simulated annotator '{name}'", field="preset",
                    hint=f"known: {', '.join(ANNOTATOR_NAMES)} (folders of annotator_prompts/ with backend: synthetic)")


def build_synthetic(config: dict, seed: int = 0, quality_fn: QualityFn | None = None) -> Annotator:
    """The annotator for a judge config with `backend: synthetic`, over `quality_fn` (a world's gold quality).

    Keys: backend ("synthetic"), world (default "tasks"), preset (gold, longest, a name in PRESETS, or a pool
    folder of simulated judges), name (the judge's name, default the preset's), draw (person, default `seed`),
    flip (an extra label-flip rate), pool_position / pool_length (a pool member: `member_params`), and any
    JudgeParams field to override the preset.

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
    name = cfg.pop("name", None)
    world = cfg.pop("world", "tasks")
    if world not in WORLDS:
        raise FarmError(f"unknown world '{world}'", field="world", hint=f"known: {', '.join(WORLDS)}")
    preset = cfg.pop("preset", None)
    if preset is None:
        raise FarmError("a synthetic judge needs a preset", field="preset", hint=f"one of {', '.join(ANNOTATOR_NAMES)}")
    draw = int(cfg.pop("draw", seed))
    extra_flip = float(cfg.pop("flip", 0.0))
    variant = cfg.pop("pool_position", None), cfg.pop("pool_length", None)
    if quality_fn is None:
        quality_fn = world_quality(world)
    if (cfg or variant != (None, None)) and preset not in PRESETS:
        raise FarmError(f"parameters {sorted(cfg)} only apply to single judges, not '{preset}'",
                        field=next(iter(cfg), "pool_position"))
    if preset in RULES:
        annotator: Annotator = RuleJudge(preset, quality_fn)
    elif preset in PRESETS:
        params = PRESETS[preset]
        if variant != (None, None):
            params = member_params(params, float(variant[0] or 0.0), 1.0 if variant[1] is None else float(variant[1]))
        known = {f.name for f in fields(JudgeParams)}
        bad = set(cfg) - known
        if bad:
            raise FarmError(f"unknown judge parameter(s) {sorted(bad)}", hint=f"known: {', '.join(sorted(known))}")
        annotator = SyntheticJudge(name or preset, quality_fn, replace(params, **cfg), draw=draw)
    else:  # a pool folder of simulated judges
        folder = find_folder(preset)
        if folder is None or "members" not in read_yaml(folder / "config.yaml") or not is_simulated(folder):
            raise FarmError(f"unknown simulated annotator '{preset}'", field="preset",
                            hint=f"known: {', '.join(ANNOTATOR_NAMES)}")
        annotator = make_annotator(preset, quality_fn, seed=draw)
    return flip(annotator, extra_flip) if extra_flip else annotator


def world_quality(world: str) -> QualityFn:
    """The gold quality function of a world whose module is already imported (FarmError otherwise)."""
    from farm.worlds import WORLDS

    module = sys.modules.get(WORLDS.get(world, ""))
    if module is None:
        raise FarmError(f"world '{world}' is not loaded", field="world",
                        hint="pass quality_fn=, or load the judge with farm.annotators.load_annotator")
    return module.quality_parts
