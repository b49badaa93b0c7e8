"""`farm compare` end to end on a tiny run: every artefact, resume without redoing work, notebooks execute."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from farm.errors import FarmError
from farm.run import compare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    run = compare(REPO / "configs" / "smoke.yaml", [f"run_dir={run_dir}", "progress=false"], log=lambda s: None)
    return run


def test_compare_writes_every_artefact(smoke_run):
    d = smoke_run.dir
    for rel in ["config.yaml", "data/sft.json", "data/pairs.jsonl", "data/preferences.jsonl", "models/sft/model",
                "models/reward/model", "outputs/sft.json", "outputs/best_of_n.json", "outputs/dpo.json",
                "outputs/ppo.json", "annotations/pool.jsonl", "annotations/human.jsonl", "annotations/gold.jsonl",
                "leaderboard.csv", "correlation_pool_vs_human.csv", "overoptimisation.json", "report.md",
                "figures/pool_vs_human.png", "figures/overoptimisation.png"]:
        assert (d / rel).exists(), rel
    lb = pd.read_csv(d / "leaderboard.csv", index_col=0)
    assert set(lb.index) == {"sft", "best_of_n", "best_of_n_judge", "dpo", "ppo", "ppo_judge", "rloo"}
    # rloo's reward is the training pool's verdict against the SFT policy's greedy answer: 3 steps x 16 responses
    rloo_stage = json.loads((d / "stages.json").read_text())["method:rloo"]
    assert rloo_stage["judge_requests"] == 3 * 16 and rloo_stage["judge_invalid"] == 0
    # a named variant (extra_methods.ppo_judge.method = ppo): its own model, config and outputs; the judge asked in
    # both orders for 3 steps x 16 responses
    variant = json.loads((d / "stages.json").read_text())["method:ppo_judge"]
    assert variant["judge_requests"] == 2 * 3 * 16 and variant["steps"] == 3
    assert (d / "models" / "ppo_judge" / "model").exists() and (d / "outputs" / "ppo_judge.json").exists()
    vcfg = (d / "configs" / "ppo_judge.yaml").read_text()
    assert "  judge: gpt4_turbo_like" in vcfg and "judge_both_orders: true" in vcfg  # the `reward:` block
    for judge in ("pool", "human", "gold"):
        assert lb[f"{judge}_win_rate"].between(0, 100).all()
        assert (lb[f"{judge}_standard_error"] > 0).all()
        assert (lb[f"{judge}_win_rate_ci_low"] <= lb[f"{judge}_win_rate"]).all()
    corr = pd.read_csv(d / "correlation_pool_vs_human.csv", index_col=0)
    assert {"spearman", "kendall"} <= set(corr.index)
    n_eval = len(json.loads((d / "data" / "eval.json").read_text()))
    assert sum(1 for _ in open(d / "annotations" / "human.jsonl")) == len(lb) * n_eval * 2  # two seeds each
    # method_seeds: 2 — a second model per method with its own training seed, its own outputs and its own rows
    assert (d / "models" / "dpo@s1" / "model").exists() and (d / "outputs" / "sft@s1.json").exists()
    assert "seed: 1000" in (d / "configs" / "dpo@s1.yaml").read_text()
    # votes: 2 — each human/pool verdict is the mean of two independent simulated verdicts (gold is asked once)
    human = [json.loads(line) for line in open(d / "annotations" / "human.jsonl")]
    assert all(len(r["annotation_meta"]["votes"]) == 2 and r["p_output_2"] == pytest.approx(sum(r["annotation_meta"]["votes"]) / 2)
               for r in human)
    assert any(r["annotation_meta"]["votes"][0] != r["annotation_meta"]["votes"][1] for r in human)  # independent, not one verdict twice
    assert all("votes" not in r.get("annotation_meta", {}) for r in map(json.loads, open(d / "annotations" / "gold.jsonl")))
    per_seed = pd.read_csv(d / "leaderboard_gold.csv", index_col=0)
    assert {"dpo", "dpo@s1", "sft", "sft@s1"} <= set(per_seed.index)
    # the method's win rate is the mean of its seeds' win rates (every seed answered every prompt)
    for m in lb.index:
        want = (per_seed.loc[m, "win_rate"] + per_seed.loc[f"{m}@s1", "win_rate"]) / 2
        assert lb.loc[m, "gold_win_rate"] == pytest.approx(want, abs=1e-9)
    oo = pd.read_json(d / "overoptimisation.json")
    assert set(oo["method"]) == {"best_of_n", "best_of_n_judge", "ppo"}
    assert sorted(oo[oo.method == "best_of_n"]["x"]) == [1, 2, 4]
    assert (oo["gold_se"] > 0).all()
    # both best-of-n variants pick among the same candidates: at n=1 they are the same outputs, same gold win rate
    at1 = oo[oo.x == 1].set_index("method")["gold_win_rate"]
    assert at1["best_of_n"] == at1["best_of_n_judge"]
    # paired differences with the SFT policy: the same instructions, so Δ = difference of the two win rates exactly
    pv = pd.read_csv(d / "paired_vs_sft.csv")
    assert set(pv["judge"]) == {"pool", "human", "gold"} and set(pv["model_a"]) == set(lb.index) - {"sft"}
    for judge in ("pool", "human", "gold"):
        for _, r in pv[pv.judge == judge].iterrows():
            want = lb.loc[r["model_a"], f"{judge}_win_rate"] - lb.loc["sft", f"{judge}_win_rate"]
            assert r["difference"] == pytest.approx(want, abs=1e-9)
            assert r["standard_error"] >= 0 and r["ci_low"] <= r["difference"] <= r["ci_high"]
    report = (d / "report.md").read_text()
    assert "## Against the SFT policy (paired)" in report
    assert "| ppo |" in report and "Spearman" in report and "| best_of_n_judge | n=4 |" in report


def test_rerun_resumes_without_redoing_work(smoke_run):
    before = json.loads((smoke_run.dir / "stages.json").read_text())
    mtime = (smoke_run.dir / "models" / "sft" / "model").stat().st_mtime
    logs: list[str] = []
    compare(smoke_run.dir / "config.yaml", ["progress=false"], log=logs.append)
    after = json.loads((smoke_run.dir / "stages.json").read_text())
    assert after == before
    assert (smoke_run.dir / "models" / "sft" / "model").stat().st_mtime == mtime
    assert sum("done earlier (resumed)" in line for line in logs) == len(before)


def test_changed_config_in_existing_run_is_refused(smoke_run):
    with pytest.raises(FarmError, match="seed"):
        compare(smoke_run.dir / "config.yaml", ["seed=1", "progress=false"], log=lambda s: None)


def test_a_variant_naming_an_unknown_method_is_refused_with_its_field(tmp_path):
    args = [f"run_dir={tmp_path / 'run'}", "progress=false", "methods=[sft,ppo_x]",
            "extra_methods={ppo_x: {method: ppox}}"]
    with pytest.raises(FarmError, match="ppox") as e:
        compare(REPO / "configs" / "smoke.yaml", args, log=lambda s: None)
    assert "extra_methods.ppo_x.method" in str(e.value)
    assert not (tmp_path / "run" / "models").exists()  # refused before any work


def test_interrupted_run_resumes_from_the_stage_it_reached(tmp_path):
    run_dir = tmp_path / "run"
    args = [f"run_dir={run_dir}", "progress=false", "methods=[sft]"]
    compare(REPO / "configs" / "smoke.yaml", args, log=lambda s: None)
    stages = json.loads((run_dir / "stages.json").read_text())
    # forget the last stages as if the process had been killed after `evaluate`
    for name in ("leaderboard", "overoptimisation", "report"):
        stages.pop(name)
    (run_dir / "stages.json").write_text(json.dumps(stages))
    (run_dir / "report.md").unlink()
    logs: list[str] = []
    compare(REPO / "configs" / "smoke.yaml", args, log=logs.append)
    assert (run_dir / "report.md").exists()
    redone = [line.split()[0] for line in logs if line.strip().endswith("...")]
    assert redone == ["leaderboard", "overoptimisation", "report"]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb")))
def test_notebooks_execute_on_a_run(smoke_run, name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    os.environ["FARM_RUN_DIR"] = str(smoke_run.dir)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        os.environ.pop("FARM_RUN_DIR", None)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # figures are shown inline (drawn as Figure objects; no backend forced), headless as here
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{name} shows no figure inline"


def test_world_noise_study_sweeps_label_noise_on_a_run(smoke_run):
    from farm.reproduce_world import study_world_noise

    r = study_world_noise(run=smoke_run.dir, flips=(0.0, 0.4), rm_epochs=1.0)
    curves, labels = r["curves"], r["labels"]
    assert sorted(curves["flip"].unique()) == [0.0, 0.4] and sorted(curves["n"].unique()) == [1, 2, 4]
    assert curves["gold_win_rate"].between(0, 100).all()
    # n = 1 picks the first candidate whatever the reward model: the same gold for every noise level
    assert curves[curves.n == 1]["gold_win_rate"].nunique() == 1
    assert set(labels["flip"]) == {0.0, 0.4}
    # the 0.4 labels are the 0.0 labels with ~40% of them flipped (binomial, 96 pairs)
    from farm.io import read_annotations

    clean = read_annotations(smoke_run.dir / "noise_sweep" / "flip_0.00" / "preferences.jsonl")
    noisy = read_annotations(smoke_run.dir / "noise_sweep" / "flip_0.40" / "preferences.jsonl")
    changed = [a.preference != b.preference for a, b in zip(clean, noisy) if a.preference != 0.5]
    assert 0.25 < sum(changed) / len(changed) < 0.55
    assert len(r["summary"]) == 2


def test_judge_knockout_with_the_gold_judge_picks_the_gold_best(smoke_run):
    # the knockout used by best_of_n_judge, judged by the world's exact gold judge, must return a candidate of
    # maximal gold quality for every prompt (a wrong bracket, index or grouping would not)
    from farm.io import read_records

    run = smoke_run
    recs = read_records(run.dir / "data" / "eval.json")
    cands = read_records(run.dir / "outputs" / "best_of_n_candidates.jsonl")
    n = max(c["j"] for c in cands) + 1
    pool, run.cfg.train_pool = run.cfg.train_pool, "gold"
    try:
        picked = run.judge_knockout(recs, cands, n, n)
    finally:
        run.cfg.train_pool = pool
    q = run.world.quality
    for i, (r, t) in enumerate(zip(recs, picked)):
        best = max(q(r["instruction"], r.get("input", ""), c["output"]) for c in cands[i * n:(i + 1) * n])
        assert q(r["instruction"], r.get("input", ""), t) == best


@pytest.mark.parametrize("name", ["quickstart.yaml", "learnable.yaml", "smoke.yaml", "zoo_all.yaml"])
def test_shipped_compare_configs_load_and_name_known_methods_and_world_options(name):
    from farm.config import load_config
    from farm.methods import METHODS
    from farm.run import COMPARE_ONLY, CompareConfig
    from farm.worlds import tasks

    cfg = load_config(CompareConfig, REPO / "configs" / name)
    variants = {k: v["method"] for k, v in cfg.extra_methods.items() if "method" in v}
    assert cfg.methods and all(variants.get(m, m) in METHODS or m in COMPARE_ONLY for m in cfg.methods)
    if cfg.world.name == "tasks":  # the world's options are real keyword arguments of its build
        world = tasks.build(cfg.seed, **cfg.world.options, sft=8, preference=4, unlabeled=4, eval=12)
        fams = cfg.world.options.get("families")
        assert {r["family"] for r in world.eval} == set(fams or tasks.FAMILIES)


def test_power_table_from_the_run_sizes_a_comparison(smoke_run):
    from farm.eval import power
    from farm.eval.cli_power import power_table

    t = power_table(smoke_run.dir, delta=10.0, judge="gold", seeds=(1, 2, 4))
    assert set(t.index) == set(smoke_run.cfg.methods) - {"sft"}
    assert (t["pilot_seeds"] == 2).all() and (t["pilot_prompts"] == 48).all()
    for _, r in t.iterrows():
        c = power.Components(r["sd_prompt"] ** 2, r["sd_seed"] ** 2, r["sd_residual"] ** 2, 48, 2)
        assert r["se"] == pytest.approx(c.se(48, 2))
        for k in (1, 2, 4):
            n = r[f"prompts_k{k}"]
            if n == n and n is not None and n > 1:  # reachable: the smallest n with 80% power
                assert power.power_of(10.0, c.se(int(n), k)) >= 0.8 > power.power_of(10.0, c.se(int(n) - 1, k))
    with pytest.raises(FarmError, match="judges: gold, human, pool"):
        power_table(smoke_run.dir, delta=1.0, judge="humans")


def test_readme_table_is_the_runs_leaderboard(smoke_run):
    from farm.eval.report import readme_rows
    from farm.eval.report_text import readme_table

    lb = pd.read_csv(smoke_run.dir / "leaderboard.csv", index_col=0)
    pv = pd.read_csv(smoke_run.dir / "paired_vs_sft.csv")
    text = readme_table(readme_rows(smoke_run.dir))
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == list(lb.index)  # the leaderboard's order
    for line in rows:
        m = line.split("|")[1].strip()
        g = lb.loc[m]
        assert f"{g['gold_win_rate']:.1f} [{g['gold_win_rate_ci_low']:.1f}, {g['gold_win_rate_ci_high']:.1f}]" in line
        if m != "sft":
            d = pv[(pv.judge == "gold") & (pv.model_a == m)].iloc[0]
            assert f"{d['difference']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]" in line
    assert "48 eval prompts, 2 training seed(s)" in text and "torch 2." in text


def test_farm_report_cli_prints_the_table_and_redraws_the_report(smoke_run, capsys):
    from farm.cli import main
    from farm.eval.report import readme_rows
    from farm.eval.report_text import readme_table

    assert main(["report", str(smoke_run.dir), "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == readme_table(readme_rows(smoke_run.dir)).strip()
    report = smoke_run.dir / "report.md"
    before = report.read_text()
    report.unlink()
    assert main(["report", str(smoke_run.dir)]) == 0
    after = [line for line in report.read_text().splitlines() if not line.startswith("| report |")]
    assert after == before.splitlines()  # re-drawn from the run's files alone (plus the report stage's own time)
    assert main(["report", str(smoke_run.dir / "figures")]) != 0
    assert "not a finished farm compare run" in capsys.readouterr().err


def test_two_worker_processes_give_the_same_leaderboard_as_one(tmp_path):
    args = ["progress=false", "methods=[sft,dpo,rloo]", "n_boot=50"]
    one = compare(REPO / "configs" / "smoke.yaml", args + [f"run_dir={tmp_path / 'one'}"], log=lambda s: None)
    logs: list[str] = []
    two = compare(REPO / "configs" / "smoke.yaml", args + [f"run_dir={tmp_path / 'two'}", "workers=2"],
                  log=logs.append)
    assert any("(worker)" in line for line in logs)  # rows really ran in the worker processes
    a = pd.read_csv(one.dir / "leaderboard.csv", index_col=0)
    b = pd.read_csv(two.dir / "leaderboard.csv", index_col=0)
    pd.testing.assert_frame_equal(a, b)
    assert set(json.loads((two.dir / "stages.json").read_text())) == set(json.loads((one.dir / "stages.json")
                                                                                      .read_text()))
