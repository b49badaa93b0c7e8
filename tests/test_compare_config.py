"""`farm compare` refuses a bad config in seconds, before any work, naming the user's file, line and key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from farm.errors import FarmError
from farm.run import compare, dry_run
from farm.run_config import CompareConfig

REPO = Path(__file__).resolve().parents[1]


def _user_config(tmp_path, extra: str) -> Path:
    """smoke.yaml with `extra` (YAML lines) replacing the sections it names."""
    import yaml

    keys = set(yaml.safe_load(extra) or {}) if extra else set()
    kept = [line for line in (REPO / "configs" / "smoke.yaml").read_text().splitlines(keepends=True)
            if line.split(":", 1)[0] not in keys]
    text = "".join(kept) + extra
    path = tmp_path / "mine.yaml"
    path.write_text(text.replace("run_dir: runs/smoke", f"run_dir: {tmp_path / 'run'}"))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("extra, key, needle, hint", [
    ("dpo: {train: {epochs: 1.0}, bta: 0.2}\n", "dpo.bta", "bta", "dpo.beta"),
    ("expert_iteration: {stpes: 3}\n", "expert_iteration.stpes", "stpes", None),
    ("reward: {train: {lrr: 1.0}}\n", "reward.train.lrr", "lrr", "reward.train.lr"),
])
def test_a_typo_in_a_method_section_is_refused_before_any_work_naming_file_line_and_key(tmp_path, extra, key,
                                                                                        needle, hint):
    path = _user_config(tmp_path, extra)
    t0 = time.process_time()
    with pytest.raises(FarmError) as e:
        compare(path, ["progress=false"], log=lambda s: None)
    assert time.process_time() - t0 < 30  # seconds of checking, not minutes of SFT
    assert e.value.field == key
    assert e.value.file == str(path) and e.value.line == _line_of(path, needle)
    if hint:
        assert hint in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing written: the folder is not locked to the bad config


def test_a_misspelt_pool_is_refused_with_a_suggestion(tmp_path):
    path = _user_config(tmp_path, "train_pool: alpacafarm_pol\n")
    with pytest.raises(FarmError, match="did you mean 'alpacafarm_pool'") as e:
        compare(path, ["progress=false"], log=lambda s: None)
    assert e.value.field == "train_pool" and e.value.line == _line_of(path, "alpacafarm_pol")
    assert not (tmp_path / "run").exists()


def test_a_misspelt_judge_inside_a_variant_is_refused_naming_the_variant(tmp_path):
    path = _user_config(tmp_path, "")
    args = ["progress=false", "extra_methods.ppo_judge.reward.judge=gpt4_turbo_lik"]
    with pytest.raises(FarmError, match="gpt4_turbo_like") as e:
        compare(path, args, log=lambda s: None)
    assert e.value.field == "extra_methods.ppo_judge.reward.judge"


def test_an_unknown_top_level_key_names_its_line(tmp_path):
    path = _user_config(tmp_path, "methd_seeds: 2\n")
    with pytest.raises(FarmError, match="did you mean 'method_seeds'") as e:
        compare(path, ["progress=false"], log=lambda s: None)
    assert e.value.line == _line_of(path, "methd_seeds")


def test_a_world_option_the_world_does_not_take_is_refused(tmp_path):
    path = _user_config(tmp_path, "")
    with pytest.raises(FarmError) as e:
        compare(path, ["progress=false", "world.options.familes=[reverse]"], log=lambda s: None)
    assert e.value.file == "command line"


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = _user_config(tmp_path, "")
    path.write_text(path.read_text() + "seed: 3\n")
    with pytest.raises(FarmError, match="key 'seed' appears twice"):
        compare(path, ["progress=false"], log=lambda s: None)


def test_dry_run_resolves_every_stage_and_writes_nothing(tmp_path):
    from farm.config import load_config

    path = _user_config(tmp_path, "dpo: {beta: 0.3}\n")
    logs: list[str] = []
    out = dry_run(load_config(CompareConfig, path), path, log=logs.append)
    assert not (tmp_path / "run").exists()
    # every stage, both seeds of each method; the method's own defaults survive the user's section
    assert {"compare", "sft", "reward", "dpo", "dpo@s1", "ppo_judge", "ppo_judge@s1", "rloo@s1"} <= set(out)
    assert out["dpo"]["beta"] == 0.3 and out["dpo@s1"]["train"]["seed"] == 1000
    assert out["dpo"]["train"]["schedule"] == "constant"  # dpo.Config's own default, kept under `train.epochs`
    assert out["ppo_judge"]["reward"]["judge"] == "gpt4_turbo_like"
    assert any(line.startswith("# --- dpo@s1 ---") for line in logs)
