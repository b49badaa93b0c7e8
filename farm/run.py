"""`farm compare CONFIG [key=value ...]`: the AlpacaFarm protocol end to end, in one run folder.

    data splits → SFT policy → 2 samples per preference prompt → training pool → preferences → reward model
    → methods (sft, best_of_n, expert_iteration, ppo, dpo, rloo, ...) → eval outputs
    → win rates vs the baseline under the eval pool, the simulated human and the gold judge
    → leaderboards with intervals, Spearman/Kendall (with intervals) between pool and human rankings,
      over-optimisation curves (best-of-n vs n, PPO vs KL), plots and a markdown report.

Every arrow is a file under `run_dir` (see `docs/compare.md`). Each stage records itself in `stages.json` when its
files are complete, so an interrupted run resumes where it stopped: re-run the same command. Annotations go
through the persistent verdict cache (`cache.sqlite`), so even a stage killed half-way re-annotates nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from farm.config import from_dict, load_config, save_config, to_dict
from farm.errors import FarmError
from farm.io import atomic_write_text, read_records, write_records
from farm.models.tiny import TinySpec
from farm.types import Pair

DEFAULT_METHODS = ["sft", "best_of_n", "expert_iteration", "ppo", "dpo", "rloo"]
COMPARE_ONLY = ("sft", "best_of_n_judge")  # rows of `farm compare` that are not `farm train` methods


@dataclass
class WorldSpec:
    """The offline world that provides the splits, the baseline and the simulated judges."""

    name: str = "tasks"
    """world name (see `farm ls worlds`); empty to use `data` files instead"""
    sizes: dict[str, int] = field(default_factory=lambda: {"sft": 2000, "preference": 600, "unlabeled": 400,
                                                            "eval": 200})
    """split sizes: sft, preference, unlabeled, eval"""
    options: dict[str, Any] = field(default_factory=dict)
    """other keyword arguments of the world's `build` (tasks: baseline_skill; harm: unsafe_share, comply)"""


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
    """empty = build a tiny Llama from `tiny`; else a model folder, a .gguf file or a cached hub name"""
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
    """one seed for the whole run (world, models, sampling, judges, bootstrap)"""
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
    """overrides for any other method in `methods`, by name (safe_ppo, rewrite, correct, critique_revise); an entry
    with a `method` key is a named VARIANT of that method, ranked beside it, e.g.
    `extra_methods: {ppo_judge: {method: ppo, reward_judge: gpt4_turbo_like}}` with `methods: [sft, ppo, ppo_judge]`"""
    n_boot: int = 1000
    """bootstrap resamples for intervals"""
    concurrency: int = 0
    """requests in flight for LLM judges (0 = each judge's own setting)"""
    threads: int = 1
    """CPU threads for torch (0 = torch's default). Tiny models run several times faster on 1 thread than on 2
    busy cores; raise it for bigger models on a many-core CPU"""
    progress: bool = True


# ----- stage bookkeeping -----

class Stages:
    """`stages.json`: name → result dict of each finished stage (written atomically after its files)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None]):
        self.path = run_dir / "stages.json"
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.log = log

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        if name in self.done:
            self.log(f"  {name:<28} done earlier (resumed)")
            return self.done[name]
        t0 = time.time()
        self.log(f"  {name:<28} ...")
        result = fn() or {}
        result["seconds"] = round(time.time() - t0, 2)
        self.done[name] = result
        atomic_write_text(self.path, json.dumps(self.done, indent=1, default=str) + "\n")
        self.log(f"  {name:<28} done in {result['seconds']:.1f} s")
        return result


# ----- the run -----

class CompareRun:
    def __init__(self, cfg: CompareConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.dir = Path(cfg.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(cfg.threads)
        self._check_config()
        self.stages = Stages(self.dir, log)
        self.world = self._world()
        self._annotators: dict[str, Any] = {}
        import sys

        self.progress = cfg.progress and sys.stderr.isatty()  # bars only where someone watches them

    # -- setup --
    def _check_config(self) -> None:
        path = self.dir / "config.yaml"
        if path.exists():
            import yaml

            old = yaml.safe_load(path.read_text())
            new = json.loads(json.dumps(to_dict(self.cfg)))
            changed = sorted(k for k in set(old) | set(new)
                             if old.get(k) != new.get(k) and k not in ("progress", "threads", "concurrency"))
            if changed:
                raise FarmError(f"run folder holds a run with another config (differs in: {', '.join(changed)})",
                                file=path, hint="use a new run_dir=..., or delete the folder to start over")
        save_config(self.cfg, path)

    def _world(self):
        if not self.cfg.world.name:
            return None
        from farm.worlds import WORLDS

        if self.cfg.world.name not in WORLDS:
            raise FarmError(f"unknown world '{self.cfg.world.name}'", field="world.name",
                            hint=f"known: {', '.join(WORLDS)}")
        import importlib

        return importlib.import_module(WORLDS[self.cfg.world.name]).build(self.cfg.seed, **self.cfg.world.options,
                                                                          **self.cfg.world.sizes)

    def annotator(self, name: str):
        """A simulated annotator of the world by name, else a judge/pool folder (farm.annotators)."""
        if name not in self._annotators:
            from farm.annotators.synthetic import ANNOTATOR_NAMES

            if self.world is not None and name in ANNOTATOR_NAMES:
                self._annotators[name] = self.world.annotator(name, seed=self.cfg.seed)
            else:
                from farm.annotators import load_annotator

                self._annotators[name] = load_annotator(name)
        return self._annotators[name]

    def annotate(self, pairs: list[Pair], name: str) -> list:
        from farm.annotators import annotate_pairs

        return annotate_pairs(pairs, self.annotator(name), seed=self.cfg.seed,
                              cache_path=self.dir / "cache.sqlite", progress=self.progress,
                              concurrency=self.cfg.concurrency or None)

    def p(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def run_level(self) -> dict[str, Any]:
        """The settings every method takes from the run (placed into each Config by `methods.compare_settings`)."""
        return {"seed": self.cfg.seed, "device": self.cfg.policy.device, "progress": self.progress,
                "prompt_style": self.cfg.policy.style, "max_new_tokens": self.cfg.policy.max_new_tokens}

    def method_config(self, module, overrides: dict, base: dict, key: str):
        """module.Config from the run's defaults (`base`) and the user's overrides (errors name `key.field`)."""
        from farm.config import deep_merge

        data = deep_merge(base, overrides)
        cfg = from_dict(module.Config, data, source=f"{self.dir / 'config.yaml'} ({key})")
        save_config(cfg, self.p("configs", f"{key}.yaml"))
        return cfg

    # -- stages --
    def stage_data(self) -> dict:
        d = self.p("data")
        if self.world is not None:
            paths = self.world.write(d)
            return {k: str(v) for k, v in paths.items()}
        files = self.cfg.data
        missing = [f.name for f in dataclasses.fields(files) if not getattr(files, f.name)]
        if missing:
            raise FarmError("no world and no data file for these splits", field=f"data.{missing[0]}",
                            hint="set world.name: tasks, or give data.sft/preference/unlabeled/eval/baseline_outputs")
        out = {}
        for f in dataclasses.fields(files):
            out[f.name] = str(write_records(d / f"{f.name}.json", read_records(getattr(files, f.name))))
        return out

    def stage_init_model(self) -> dict:
        if self.cfg.policy.path:
            return {"model": self.cfg.policy.path}
        from farm.methods.data import prompt_text
        from farm.models.tiny import build_tiny

        recs = read_records(self.p("data", "sft.json"))
        texts = [prompt_text(r, None, "alpaca") + r["output"] for r in recs]
        path = build_tiny(texts, self.p("models", "init"), self.cfg.policy.tiny, seed=self.cfg.seed)
        return {"model": str(path)}

    def stage_sft(self, init: str) -> dict:
        from farm.methods import compare_settings, sft

        base = compare_settings(sft.Config, {"policy": init, "data": str(self.p("data", "sft.json")),
                                             "output_dir": str(self.p("models", "sft")), **self.run_level()})
        cfg = self.method_config(sft, self.cfg.sft, base, "sft")
        res = sft.run(cfg)
        return {"model": str(Path(cfg.output_dir) / "model"), **_scalars(res)}

    def load_policy(self, path: str):
        from farm.models.loading import load_causal_lm

        return load_causal_lm(path, device=self.cfg.policy.device)

    def sample(self, model_path: str, records: list[dict], *, n: int = 1, temperature: float, seed: int) -> list[str]:
        """n responses per record (record-major), from the model at `model_path`."""
        from farm.methods.data import prompt_text
        from farm.models.generation import generate

        model, tok = self.load_policy(model_path)
        prompts = [prompt_text(r, tok, self.cfg.policy.style) for r in records for _ in range(n)]
        return generate(model, tok, prompts, max_new_tokens=self.cfg.policy.max_new_tokens,
                        temperature=max(temperature, 1e-6), greedy=temperature <= 0,
                        batch_size=self.cfg.policy.batch_size, seed=seed, progress=self.progress).texts

    def stage_pairs(self, sft_model: str) -> dict:
        recs = read_records(self.p("data", "preference.json"))
        texts = self.sample(sft_model, recs, n=2, temperature=self.cfg.policy.sample_temperature,
                            seed=self.cfg.seed + 1)
        pairs = [Pair(r["instruction"], texts[2 * i], texts[2 * i + 1], input=r.get("input", ""),
                      generator_1="sft", generator_2="sft", id=str(r.get("id", i)))
                 for i, r in enumerate(recs)]
        path = write_records(self.p("data", "pairs.jsonl"), [p.to_record() for p in pairs])
        return {"pairs": str(path), "n_pairs": len(pairs),
                "identical": sum(p.output_1 == p.output_2 for p in pairs)}

    def stage_preferences(self) -> dict:
        from farm.io import read_pairs, write_annotations

        pairs = read_pairs(self.p("data", "pairs.jsonl"))
        anns = self.annotate(pairs, self.cfg.train_pool)
        path = write_annotations(self.p("data", "preferences.jsonl"), anns)
        valid = [a.preference for a in anns if a.preference is not None]
        return {"preferences": str(path), "n": len(anns), "invalid": len(anns) - len(valid),
                "p_output_2_mean": sum(valid) / max(len(valid), 1)}

    def stage_reward(self, sft_model: str) -> dict:
        from farm.methods import compare_settings, reward

        base = compare_settings(reward.Config, {"policy": sft_model, "data": str(self.p("data", "preferences.jsonl")),
                                                "output_dir": str(self.p("models", "reward")), **self.run_level()})
        cfg = self.method_config(reward, self.cfg.reward, base, "reward")
        res = reward.run(cfg)
        return {"model": str(Path(cfg.output_dir) / "model"), **_scalars(res),
                "heldout_accuracy": (res.get("heldout") or {}).get("accuracy")}

    def write_outputs(self, name: str, records: list[dict], texts: list[str]) -> str:
        outs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": t, "generator": name,
                 **({"family": r["family"]} if "family" in r else {})} for r, t in zip(records, texts)]
        return str(write_records(self.p("outputs", f"{name}.json"), outs))

    def eval_outputs_of(self, name: str, model_path: str) -> str:
        recs = read_records(self.p("data", "eval.json"))
        texts = self.sample(model_path, recs, temperature=self.cfg.policy.eval_temperature, seed=self.cfg.seed + 7)
        return self.write_outputs(name, recs, texts)

    def bon_candidates(self, sft_model: str, rm: str) -> tuple[list[dict], list[dict], int]:
        """(eval records, candidates, n): n samples per eval prompt with their reward-model scores, sampled once
        (outputs/best_of_n_candidates.jsonl) and shared by both best-of-n variants and the over-optimisation curve."""
        n = int(self.cfg.best_of_n.get("n", 16))
        recs = read_records(self.p("data", "eval.json"))
        path = self.p("outputs", "best_of_n_candidates.jsonl")
        if path.exists():
            cands = read_records(path)
            if len(cands) == n * len(recs):
                return recs, cands, n
        from farm.methods.scorers import RewardModelScorer

        texts = self.sample(sft_model, recs, n=n, temperature=self.cfg.policy.sample_temperature,
                            seed=self.cfg.seed + 3)
        scorer = RewardModelScorer(rm, style=self.cfg.policy.style, device=self.cfg.policy.device)
        scores = scorer.score([r for r in recs for _ in range(n)], texts)
        cands = [{"i": i // n, "j": i % n, "output": t, "proxy_reward": s} for i, (t, s) in enumerate(zip(texts, scores))]
        write_records(path, cands)
        return recs, cands, n

    def stage_best_of_n(self, sft_model: str, rm: str) -> dict:
        """The reward model's best of n candidates."""
        from farm.methods.scorers import pick_best

        recs, cands, n = self.bon_candidates(sft_model, rm)
        best = pick_best([c["proxy_reward"] for c in cands], n)
        return {"outputs": self.write_outputs("best_of_n", recs, [cands[i]["output"] for i in best]), "n": n}

    def judge_knockout(self, recs: list[dict], cands: list[dict], n: int, k: int) -> list[str]:
        """Winner of a knockout among each prompt's first k candidates, judged by the training pool (the same
        simulated annotators whose labels train the reward model), cached in the run's cache.sqlite."""
        from farm.methods.scorers import knockout

        groups = [[c["output"] for c in cands[i * n:i * n + k]] for i in range(len(recs))]
        if k == 1:
            return [g[0] for g in groups]
        best = knockout(self.annotator(self.cfg.train_pool), recs, groups, seed=self.cfg.seed,
                        cache_path=str(self.dir / "cache.sqlite"))
        return [g[b] for g, b in zip(groups, best)]

    def stage_best_of_n_judge(self, sft_model: str, rm: str) -> dict:
        """Best of n by the training pool itself (a knockout tournament, no reward model in between)."""
        recs, cands, n = self.bon_candidates(sft_model, rm)
        texts = self.judge_knockout(recs, cands, n, n)
        return {"outputs": self.write_outputs("best_of_n_judge", recs, texts), "n": n, "judge": self.cfg.train_pool}

    def method_of(self, name: str) -> tuple[str, dict | None]:
        """(the method a `methods` entry runs, its overrides): a variant in `extra_methods` names its `method`."""
        extra = self.cfg.extra_methods.get(name)
        if isinstance(extra, dict) and "method" in extra:
            return str(extra["method"]), {k: v for k, v in extra.items() if k != "method"}
        return name, None

    def stage_method(self, name: str, sft_model: str, rm: str) -> dict:
        from farm.methods import compare_settings, load_method, training_annotator

        method, variant = self.method_of(name)
        module = load_method(method)
        # run-level values only (the method's own Config holds its defaults); a method that asks a judge as it
        # trains (online DPO) asks the training pool
        base = compare_settings(module.Config, {
            "policy": sft_model, "reward_model": rm, "output_dir": str(self.p("models", name)),
            "prompts": str(self.p("data", "unlabeled.json")), "preferences": str(self.p("data", "preferences.jsonl")),
            "eval_prompts": str(self.p("data", "eval.json")), "judge": self.cfg.train_pool, **self.run_level()})
        if variant is not None:
            overrides = variant
        elif name in ("expert_iteration", "ppo", "dpo", "rloo"):
            overrides = getattr(self.cfg, name)
        else:
            overrides = self.cfg.extra_methods.get(name, {})
        cfg = self.method_config(module, overrides, base, name)
        # an annotator in the loop (a judge's reward, online DPO's labels): the run's own judges by name
        judge = training_annotator(cfg)
        res = module.run(cfg, annotator=self.annotator(judge)) if judge else module.run(cfg)
        model_dir = Path(cfg.output_dir) / "model"
        out: dict[str, Any] = {"model": str(model_dir), **_scalars(res)}
        if Path(cfg.output_dir, "model_outputs.json").exists():  # inference-time methods write outputs directly
            out["outputs"] = self.write_outputs(name, read_records(self.p("data", "eval.json")),
                                                [r["output"] for r in read_records(Path(cfg.output_dir,
                                                                                        "model_outputs.json"))])
        else:
            out["outputs"] = self.eval_outputs_of(name, str(model_dir))
        return out

    def stage_evaluate(self, methods: list[str]) -> dict:
        """Pairs (baseline, method) on every eval instruction, judged by the eval pool, the human and gold."""
        base = read_records(self.p("data", "baseline_outputs.json"))
        by_key = {(b["instruction"], b.get("input", "")): b["output"] for b in base}
        pairs = []
        for m in methods:
            for r in read_records(self.p("outputs", f"{m}.json")):
                key = (r["instruction"], r.get("input", ""))
                if key not in by_key:
                    raise FarmError("eval instruction without a baseline output", file=self.p("outputs", f"{m}.json"),
                                    field="instruction")
                pairs.append(Pair(key[0], by_key[key], r["output"], input=key[1], generator_1="baseline",
                                  generator_2=m))
        from farm.io import write_annotations

        out = {}
        judges = [("pool", self.cfg.eval_pool), ("human", self.cfg.human)]
        if self.world is not None:
            judges.append(("gold", "gold"))
        for label, judge in judges:
            anns = self.annotate(pairs, judge)
            out[label] = str(write_annotations(self.p("annotations", f"{label}.jsonl"), anns))
        return out

    def stage_leaderboard(self, annotations: dict) -> dict:
        import pandas as pd

        from farm.eval import correlate_annotations, leaderboard

        tables = {}
        for label, path in annotations.items():
            lb = leaderboard(path, n_boot=self.cfg.n_boot, seed=self.cfg.seed, lc=True)
            lb.to_csv(self.p(f"leaderboard_{label}.csv"))
            tables[label] = lb
        cols = ["win_rate", "standard_error", "win_rate_ci_low", "win_rate_ci_high", "length_controlled_winrate",
                "avg_length"]
        merged = pd.concat({k: v[[c for c in cols if c in v.columns]] for k, v in tables.items()}, axis=1)
        merged.columns = [f"{a}_{b}" for a, b in merged.columns]
        merged = merged.sort_values("human_win_rate", ascending=False)
        merged.index.name = "method"
        merged.to_csv(self.p("leaderboard.csv"))
        if "sft" in merged.index:  # does a method beat the SFT policy? paired over the same eval instructions
            paired = pd.concat([_paired_vs(path, "sft", label, self.cfg.n_boot, self.cfg.seed)
                                for label, path in annotations.items()], ignore_index=True)
            paired.to_csv(self.p("paired_vs_sft.csv"), index=False)
        corr = {}
        if len(tables["pool"]) >= 3:
            c = correlate_annotations(annotations["pool"], annotations["human"], n_boot=self.cfg.n_boot,
                                      seed=self.cfg.seed)
            c.to_csv(self.p("correlation_pool_vs_human.csv"))
            corr = {str(k): {kk: _num(vv) for kk, vv in row.items()} for k, row in c.iterrows()}
        return {"leaderboard": str(self.p("leaderboard.csv")), "correlation": corr}

    def stage_overoptimisation(self, rm: str) -> dict:
        """Best-of-n: proxy reward and gold win rate vs n. PPO: proxy reward and gold win rate vs KL per checkpoint."""
        if self.world is None:
            return {"skipped": "needs a world's gold judge"}
        rows = []
        base_recs = read_records(self.p("data", "baseline_outputs.json"))
        recs = read_records(self.p("data", "eval.json"))
        q = self.world.quality

        def gold_win(recs_, texts):
            wins = _gold_wins(q, recs_, base_recs, texts)
            mean = sum(wins) / max(len(wins), 1)
            se = (sum((w - mean) ** 2 for w in wins) / max(len(wins) - 1, 1) / max(len(wins), 1)) ** 0.5
            return {"gold_win_rate": 100 * mean, "gold_se": 100 * se}

        cand_path = self.p("outputs", "best_of_n_candidates.jsonl")
        if cand_path.exists():
            cands = read_records(cand_path)
            n = max(c["j"] for c in cands) + 1
            grid = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
            for k in grid:
                texts, proxy = [], []
                for i, _ in enumerate(recs):
                    group = cands[i * n:i * n + k]
                    best = max(group, key=lambda c: c["proxy_reward"])
                    texts.append(best["output"])
                    proxy.append(best["proxy_reward"])
                rows.append({"method": "best_of_n", "x_name": "n", "x": k, "proxy_reward": sum(proxy) / len(proxy),
                             **gold_win(recs, texts)})
            if "best_of_n_judge" in self.cfg.methods:
                for k in grid:
                    rows.append({"method": "best_of_n_judge", "x_name": "n", "x": k, "proxy_reward": None,
                                 **gold_win(recs, self.judge_knockout(recs, cands, n, k))})
        ckpts = sorted(self.p("models", "ppo", "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:])) \
            if self.p("models", "ppo", "checkpoints").exists() else []
        if ckpts:
            from farm.methods.scorers import RewardModelScorer

            scorer = RewardModelScorer(rm, style=self.cfg.policy.style, device=self.cfg.policy.device)
            kl_by_step = {}
            mpath = self.p("models", "ppo", "metrics.jsonl")
            if mpath.exists():
                for r in read_records(mpath):
                    kl_by_step[int(r.get("step", -1))] = r.get("kl")
            for ck in [self.p("models", "sft", "model")] + ckpts:
                step = 0 if ck.name == "model" else int(ck.name[5:])
                texts = self.sample(str(ck), recs, temperature=self.cfg.policy.eval_temperature,
                                    seed=self.cfg.seed + 7)
                proxy = scorer.score(recs, texts)
                rows.append({"method": "ppo", "x_name": "step", "x": step, "kl": kl_by_step.get(step, 0.0 if step == 0
                                                                                              else None),
                             "proxy_reward": sum(proxy) / len(proxy), **gold_win(recs, texts)})
        write_records(self.p("overoptimisation.json"), rows)
        return {"points": len(rows)}

    def stage_report(self) -> dict:
        import pandas as pd

        from farm.eval import plots

        figs = self.p("figures")
        figs.mkdir(exist_ok=True)
        written = []
        for label in ("pool", "human", "gold"):
            path = self.p(f"leaderboard_{label}.csv")
            if path.exists():
                lb = pd.read_csv(path, index_col=0)
                plots.winrate_bars(lb, figs / f"winrate_{label}.png", title=f"Win rate vs baseline ({label})")
                written.append(f"figures/winrate_{label}.png")
        lb = pd.read_csv(self.p("leaderboard.csv"), index_col=0)
        _plot_pool_vs_human(lb, figs / "pool_vs_human.png")
        written.append("figures/pool_vs_human.png")
        oo = self.p("overoptimisation.json")
        if oo.exists() and read_records(oo):
            _plot_overoptimisation(pd.DataFrame(read_records(oo)), figs / "overoptimisation.png")
            written.append("figures/overoptimisation.png")
        report = render_report(self, lb)
        atomic_write_text(self.p("report.md"), report)
        return {"report": str(self.p("report.md")), "figures": written}

    # -- the whole protocol --
    def run(self) -> dict:
        s, cfg = self.stages, self.cfg
        unknown = [m for m in cfg.methods if m not in COMPARE_ONLY]
        from farm.methods import METHODS

        bad = [m for m in unknown if self.method_of(m)[0] not in METHODS]
        if bad:
            field_ = f"extra_methods.{bad[0]}.method" if self.method_of(bad[0])[0] != bad[0] else "methods"
            raise FarmError(f"unknown method '{self.method_of(bad[0])[0]}'", field=field_,
                            hint=f"known: {', '.join(METHODS)}; or a variant in extra_methods with a `method` key")
        t0 = time.time()
        self.log(f"farm compare → {self.dir}")
        s.run("data", self.stage_data)
        init = s.run("init_model", self.stage_init_model)["model"]
        sft_model = s.run("sft", lambda: self.stage_sft(init))["model"]
        s.run("pairs", lambda: self.stage_pairs(sft_model))
        s.run("preferences", self.stage_preferences)
        rm = s.run("reward", lambda: self.stage_reward(sft_model))["model"]
        ranked = []
        for m in cfg.methods:
            if m == "sft":
                s.run("outputs:sft", lambda: {"outputs": self.eval_outputs_of("sft", sft_model)})
            elif m == "best_of_n":
                s.run("method:best_of_n", lambda: self.stage_best_of_n(sft_model, rm))
            elif m == "best_of_n_judge":
                s.run("method:best_of_n_judge", lambda: self.stage_best_of_n_judge(sft_model, rm))
            else:
                s.run(f"method:{m}", lambda m=m: self.stage_method(m, sft_model, rm))
            ranked.append(m)
        ann = s.run("evaluate", lambda: self.stage_evaluate(ranked))
        s.run("leaderboard", lambda: self.stage_leaderboard({k: v for k, v in ann.items() if k != "seconds"}))
        s.run("overoptimisation", lambda: self.stage_overoptimisation(rm))
        s.run("report", self.stage_report)
        self.log(f"done in {time.time() - t0:.0f} s (stage times in {self.dir / 'stages.json'})")
        self.log(self.p("report.md").read_text().split("## Leaderboard", 1)[-1].split("## Files", 1)[0])
        return s.done


def _gold_wins(quality, records: list[dict], baseline: list[dict], texts: list[str]) -> list[float]:
    """Per record 1 / 0.5 / 0 as the text's gold quality beats / ties / loses to the baseline's."""
    base = {(b["instruction"], b.get("input", "")): b["output"] for b in baseline}
    wins = []
    for r, t in zip(records, texts):
        key = (r["instruction"], r.get("input", ""))
        qb, qm = quality(*key, base[key]), quality(*key, t)
        wins.append(1.0 if qm > qb else 0.5 if qm == qb else 0.0)
    return wins


def _gold_win_rate(quality, records: list[dict], baseline: list[dict], texts: list[str]) -> float:
    """100 × mean of `_gold_wins`."""
    wins = _gold_wins(quality, records, baseline, texts)
    return 100 * sum(wins) / max(len(wins), 1)


def _paired_vs(path: str, ref: str, judge: str, n_boot: int, seed: int):
    """Each method vs `ref` under one judge's annotations (baseline vs method pairs): `eval.paired_comparison` of
    the per-instruction preferences, one row per method, with a `judge` column."""
    import pandas as pd

    from farm.eval.stats import paired_comparison

    df = pd.DataFrame(read_records(path))
    df["key"] = df["instruction"] + "\x00" + df.get("input", pd.Series("", index=df.index)).fillna("")
    wide = df.pivot_table(index="key", columns="generator_2", values="p_output_2", aggfunc="mean")
    rows = [paired_comparison(wide[m].to_numpy(float), wide[ref].to_numpy(float), name_a=m, name_b=ref,
                              n_boot=n_boot, seed=seed) for m in wide.columns if m != ref]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    out.insert(0, "judge", judge)
    return out


def _num(v: Any) -> Any:
    try:
        f = float(v)
        return None if f != f else round(f, 4)
    except (TypeError, ValueError):
        return v


def _scalars(res: dict | None) -> dict:
    return {k: v for k, v in (res or {}).items() if isinstance(v, (int, float, str, bool)) and k != "model"}


def _plot_pool_vs_human(lb, path: Path) -> None:
    from farm.eval.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    x, y = lb["pool_win_rate"], lb["human_win_rate"]
    ax.errorbar(x, y, xerr=1.96 * lb["pool_standard_error"], yerr=1.96 * lb["human_standard_error"], fmt="o",
                capsize=3)
    for name, xi, yi in zip(lb.index, x, y):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    lo, hi = min(x.min(), y.min()) - 5, max(x.max(), y.max()) + 5
    ax.plot([lo, hi], [lo, hi], ls="--", c="grey", lw=1)
    ax.set_xlabel("win rate under the simulated eval pool (%)")
    ax.set_ylabel("win rate under the simulated human (%)")
    ax.set_title("Would humans agree? (95% intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_overoptimisation(df, path: Path) -> None:
    from farm.eval.plots import _pyplot

    plt = _pyplot()
    methods = list(dict.fromkeys(df["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for ax, m in zip(axes[0], methods):
        d = df[df["method"] == m].sort_values("x")
        xname = d["x_name"].iloc[0]
        se = d["gold_se"] if "gold_se" in d else None
        ax.errorbar(d["x"], d["gold_win_rate"], yerr=se, fmt="o-", c="C0", capsize=3, label="gold win rate (%) ± SE")
        ax.set_xlabel(xname + (" (log scale)" if xname == "n" else ""))
        if xname == "n":
            ax.set_xscale("log", base=2)
        ax.set_ylabel("gold win rate vs baseline (%)", color="C0")
        if d["proxy_reward"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(d["x"], d["proxy_reward"], "s--", c="C1", label="proxy reward")
            ax2.set_ylabel("proxy reward (reward model)", color="C1")
            ax.set_title(f"{m}: proxy vs gold")
        else:
            ax.set_title(f"{m}: picked by the training pool")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_report(run: CompareRun, lb) -> str:
    s = run.stages.done
    corr = s.get("leaderboard", {}).get("correlation", {})
    lines = [f"# farm compare: {run.dir.name}", "",
             f"World: {run.cfg.world.name or 'user data'} · seed {run.cfg.seed} · methods: {', '.join(run.cfg.methods)}"
             f" · training pool: {run.cfg.train_pool} · eval pool: {run.cfg.eval_pool} · human: {run.cfg.human}", "",
             "## Leaderboard", "",
             "Win rate (%) against the baseline on the eval set, ± standard error, [95% bootstrap interval]; "
             "LC = length-controlled.", "",
             "| method | human | pool | gold | pool LC | avg length |", "|---|---|---|---|---|---|"]

    def cell(row, p):
        if f"{p}_win_rate" not in row or row[f"{p}_win_rate"] != row[f"{p}_win_rate"]:
            return "–"
        return (f"{row[f'{p}_win_rate']:.1f} ± {row[f'{p}_standard_error']:.1f} "
                f"[{row[f'{p}_win_rate_ci_low']:.1f}, {row[f'{p}_win_rate_ci_high']:.1f}]")

    for name, row in lb.iterrows():
        lc = row.get("pool_length_controlled_winrate", float("nan"))
        lines.append(f"| {name} | {cell(row, 'human')} | {cell(row, 'pool')} | {cell(row, 'gold')} | "
                     f"{lc:.1f} | {row.get('pool_avg_length', float('nan')):.0f} |")
    paired_path = run.p("paired_vs_sft.csv")
    if paired_path.exists():
        import pandas as pd

        pv = pd.read_csv(paired_path)
        judges = [j for j in ("human", "pool", "gold") if j in set(pv["judge"])]
        lines += ["", "## Against the SFT policy (paired)", "",
                  "Win-rate difference with the SFT policy in points, on the same eval instructions: Δ ± paired SE "
                  "(bootstrap p); paired_vs_sft.csv.", "",
                  "| method | " + " | ".join(judges) + " |", "|---" * (len(judges) + 1) + "|"]
        for m in [m for m in lb.index if m != "sft" and m in set(pv["model_a"])]:
            cells = []
            for j in judges:
                r = pv[(pv.judge == j) & (pv.model_a == m)].iloc[0]
                cells.append(f"{r['difference']:+.1f} ± {r['standard_error']:.1f} (p {r['p_value_bootstrap']:.3f})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Would humans agree?", ""]
    if corr:
        for stat, row in corr.items():
            lines.append(f"- {stat}: {row.get('value', row)}" if not isinstance(row, dict) else
                         f"- {stat} (pool vs human ranking): " + ", ".join(f"{k} {v}" for k, v in row.items()))
    else:
        lines.append("- fewer than 3 methods: no rank correlation")
    oo = run.p("overoptimisation.json")
    rows = read_records(oo) if oo.exists() else []
    if rows:
        lines += ["", "## Over-optimisation (gold judge)", "",
                  "Gold win rate (%) vs the baseline ± SE as best-of-n grows (picked by the reward model, or by the "
                  "training pool in a knockout) and along PPO's checkpoints; figures/overoptimisation.png.", "",
                  "| method | x | gold win rate | proxy reward |", "|---|---|---|---|"]
        for r in rows:
            proxy = r.get("proxy_reward")
            lines.append(f"| {r['method']} | {r['x_name']}={r['x']} | {r['gold_win_rate']:.1f} ± "
                         f"{r.get('gold_se', float('nan')):.1f} | {'' if proxy is None else f'{proxy:.3f}'} |")
    lines += ["", "## Stages", "", "| stage | seconds | notes |", "|---|---|---|"]
    for name, res in s.items():
        notes = ", ".join(f"{k}={v}" for k, v in res.items()
                          if k not in ("seconds", "correlation", "figures") and not str(v).startswith(str(run.dir)))
        lines.append(f"| {name} | {res.get('seconds', '')} | {notes[:160]} |")
    lines += ["", "## Files", "", "config.yaml · data/ (splits, pairs, preferences) · models/ · outputs/ · "
              "annotations/ · leaderboard*.csv · correlation_pool_vs_human.csv · overoptimisation.json · figures/ · "
              "stages.json", ""]
    return "\n".join(lines)


def compare(config: str | Path | None = None, overrides: list[str] | None = None, log=print) -> CompareRun:
    """Python API: run (or resume) a comparison; returns the finished `CompareRun` (files under run.dir)."""
    cfg = load_config(CompareConfig, config, overrides or [])
    run = CompareRun(cfg, log=log)
    run.run()
    return run


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="YAML config (configs/quickstart.yaml); omit for the defaults")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. run_dir=runs/x ppo.steps=20")
    args = ap.parse_args(argv)
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    compare(config, overrides)
    return 0
