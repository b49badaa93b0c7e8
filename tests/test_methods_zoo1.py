"""Method zoo I (SFT, reward model, best-of-n, expert iteration) on a tiny model built in the test.

Invariances from TRL's tests: gradient accumulation 1×8 == 8×1, 2 processes == 1 process for the same global
batch, resume == uninterrupted; plus every trainable parameter changes, and the losses are the textbook ones."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from farm.methods.data import IGNORE_INDEX, read_preferences, tokenize_sft
from farm.methods.loop import NonFiniteLossError, TrainConfig, sft_loss, train_sft
from farm.methods.reward import evaluate_reward_model, rm_loss, train_reward_model
from farm.methods.scorers import FunctionScorer
from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm, load_scalar_model
from farm.models.tiny import TinySpec, build_tiny

RECORDS = [{"instruction": f"Sort: {a} {b} {c}", "input": "", "output": " ".join(sorted([a, b, c]))}
           for a in "1234" for b in "5678" for c in "9ab"]  # 48
GOOD, BAD = ["good", "great", "nice", "fine"], ["bad", "awful", "poor", "sad"]
_r = random.Random(0)
PREFS = [{"instruction": f"Say {i}", "input": "", "chosen": f"{_r.choice(GOOD)} {i}",
          "rejected": f"{_r.choice(BAD)} {i}", "p_chosen": 1.0} for i in range(120)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [format_prompt(r["instruction"]) + r["output"] for r in RECORDS] + [
        f"{p['chosen']} {p['rejected']}" for p in PREFS]
    spec = TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300)
    return str(build_tiny(texts, tmp_path_factory.mktemp("zoo1") / "tiny", spec, seed=0))


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _assert_all_changed(before, model):
    same = [k for k, v in model.named_parameters() if v.requires_grad and torch.equal(v.detach(), before[k])]
    assert not same, f"parameters that did not change: {same}"


def _assert_same(a, b, atol=1e-6):
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


# ----- SFT -----

def test_sft_labels_are_response_tokens_plus_eos_only(tiny):
    _, tok = load_causal_lm(tiny, device="cpu")
    recs = [RECORDS[0], {"instruction": "Sort: 9 1", "input": "x y", "output": "1 9 and more words"}]
    b = tokenize_sft(tok, recs, max_len=128)
    for i, r in enumerate(recs):
        p = tok(format_prompt(r["instruction"], r["input"]), add_special_tokens=False)["input_ids"]
        o = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(p) + len(o)
        assert b["input_ids"][i, :n].tolist() == p + o
        assert b["labels"][i].tolist() == [IGNORE_INDEX] * len(p) + o + [IGNORE_INDEX] * (b["labels"].shape[1] - n)
        assert b["attention_mask"][i].tolist() == [1] * n + [0] * (b["labels"].shape[1] - n)
    # loss counts exactly the response tokens (incl. EOS), each predicted from the position before it
    logits = torch.randn(*b["input_ids"].shape, len(tok))
    loss, count = sft_loss(logits, b["labels"])
    assert count == (b["labels"] != IGNORE_INDEX).sum()
    i, t = 0, int((b["labels"][0] != IGNORE_INDEX).nonzero()[0])
    by_hand = sum(-torch.log_softmax(logits[0, s - 1], -1)[b["labels"][0, s]]
                  for s in range(t, t + int((b["labels"][0] != IGNORE_INDEX).sum())))
    by_hand += sum(-torch.log_softmax(logits[1, s - 1], -1)[b["labels"][1, s]]
                   for s in range(b["labels"].shape[1]) if b["labels"][1, s] != IGNORE_INDEX)
    torch.testing.assert_close(loss, by_hand, atol=1e-4, rtol=1e-5)


def test_sft_changes_every_parameter_and_lowers_loss(tiny):
    model, tok = load_causal_lm(tiny, device="cpu")
    before = _params(model)
    r = train_sft(model, tok, RECORDS, TrainConfig(lr=3e-3, per_device_batch_size=8, epochs=2, progress=False,
                                                    warmup_ratio=0))
    _assert_all_changed(before, model)
    losses = [h["loss"] for h in r["history"]]
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_grad_accumulation_1x8_equals_8x1(tiny, kind):
    finals = []
    for per_device, accum in [(8, 1), (1, 8), (2, 4)]:
        tc = TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device, grad_accum=accum, max_steps=1,
                         max_grad_norm=0, schedule="constant", warmup_ratio=0, progress=False)
        if kind == "sft":
            model, tok = load_causal_lm(tiny, device="cpu")
            train_sft(model.double(), tok, RECORDS[:8], tc)
        else:
            model, tok = load_scalar_model(tiny, device="cpu")
            with torch.no_grad():  # a non-zero head so the backbone gets gradients in the first step
                model.score.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
            train_reward_model(model.double(), tok, PREFS[:8], tc, max_len=64)
        finals.append(_params(model))
        assert (finals[-1]["model.norm.weight"] != 1).any()  # the step did move the weights (norm starts at 1)
    _assert_same(finals[0], finals[1])
    _assert_same(finals[0], finals[2])


def test_resume_from_checkpoint_equals_uninterrupted(tiny, tmp_path):
    def tc(**kw):
        return TrainConfig(lr=3e-3, per_device_batch_size=8, max_steps=4, progress=False, warmup_ratio=0.25, **kw)

    m1, tok = load_causal_lm(tiny, device="cpu")
    train_sft(m1, tok, RECORDS, tc(), out_dir=tmp_path / "a")
    m2, _ = load_causal_lm(tiny, device="cpu")
    r = train_sft(m2, tok, RECORDS, tc(stop_at_step=2, save_every=1), out_dir=tmp_path / "b")
    assert r["steps"] == 2 and not r["finished"]
    m3, _ = load_causal_lm(tiny, device="cpu")  # a fresh process would start from the initial weights
    r = train_sft(m3, tok, RECORDS, tc(), out_dir=tmp_path / "b")
    assert r["finished"] and [h["step"] for h in r["history"]] == [1, 2, 3, 4]
    _assert_same(_params(m1), _params(m3), atol=1e-7)


def test_nan_loss_stops_with_a_clear_error(tiny):
    model, tok = load_causal_lm(tiny, device="cpu")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1"):
        train_sft(model, tok, RECORDS[:8], TrainConfig(per_device_batch_size=8, max_steps=1, progress=False))


# ----- reward model -----

def test_reward_model_log2_at_init_learns_toy_preferences_and_changes_every_parameter(tiny):
    model, tok = load_scalar_model(tiny, device="cpu")
    heldout = evaluate_reward_model(model, tok, PREFS[100:], max_len=64)
    assert heldout["loss"] == pytest.approx(math.log(2), abs=1e-6)  # zero head: r = 0 for everything
    before = _params(model)
    r = train_reward_model(model, tok, PREFS[:100], TrainConfig(lr=3e-3, per_device_batch_size=10, epochs=2,
                                                                 warmup_ratio=0, progress=False), max_len=64)
    assert r["history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    _assert_all_changed(before, model)
    after = evaluate_reward_model(model, tok, PREFS[100:], max_len=64)
    assert after["accuracy"] >= 0.85 and after["n"] == 20


def test_rm_loss_by_hand():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))
    assert rm_loss(rc, rr, torch.ones(2)).item() == pytest.approx(expected, rel=1e-6)
    # margin 1 on the first pair: -log σ(2 - 0 - 1); soft label 0.5 on a zero gap: log 2
    assert rm_loss(rc[:1], rr[:1], torch.ones(1), margin=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert rm_loss(torch.zeros(1), torch.zeros(1), torch.tensor([0.5])).item() == pytest.approx(math.log(2))
    assert rm_loss(rc, rr, torch.ones(2), center_coef=0.1).item() == pytest.approx(expected + 0.1 * (4 + 1))


def test_read_preferences_formats(tmp_path):
    from farm.io import write_records

    write_records(tmp_path / "a.jsonl", [
        {"instruction": "i", "output_1": "a", "output_2": "b", "p_output_2": 0.9},
        {"instruction": "i", "output_1": "a", "output_2": "b", "p_output_2": 0.5},
        {"instruction": "i", "output_1": "a", "output_2": "b", "p_output_2": None},
        {"instruction": "i", "output_1": "c", "output_2": "d", "preference": 1},
    ])
    hard = read_preferences(tmp_path / "a.jsonl")
    assert [(t["chosen"], t["rejected"], t["p_chosen"]) for t in hard] == [("b", "a", 1.0), ("c", "d", 1.0)]
    soft = read_preferences(tmp_path / "a.jsonl", soft=True)
    assert [t["p_chosen"] for t in soft] == [0.9, 0.5, 1.0]
    write_records(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: hello there",
                                           "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])
    (t,) = read_preferences(tmp_path / "hh.jsonl")
    assert (t["prompt"], t["chosen"], t["rejected"]) == ("\n\nHuman: hi\n\nAssistant:", " hello there", " go away")
    write_records(tmp_path / "bad.jsonl", [{"instruction": "i", "output": "x"}])
    from farm.errors import FarmError

    with pytest.raises(FarmError, match="bad.jsonl:1"):
        read_preferences(tmp_path / "bad.jsonl")


# ----- best-of-n and expert iteration -----

def test_best_of_n_picks_the_highest_scoring_candidate(tiny):
    from farm.methods.best_of_n import best_of_n

    model, tok = load_causal_lm(tiny, device="cpu")
    seen: list[tuple[str, str, float]] = []

    def quality(instruction, input, output):  # a gold function: digits are good
        s = sum(ch.isdigit() for ch in output) - 0.01 * len(output)
        seen.append((instruction, output, s))
        return s

    recs = RECORDS[:3]
    outs = best_of_n(model, tok, recs, 6, FunctionScorer(quality), temperature=1.0, max_new_tokens=12, seed=1)
    assert len(seen) == 18 and [o["instruction"] for o in outs] == [r["instruction"] for r in recs]
    for g, o in enumerate(outs):
        group = seen[g * 6:(g + 1) * 6]
        assert o["score"] == max(s for _, _, s in group)
        assert o["output"] == max(group, key=lambda x: x[2])[1] and o["generator"] == "best_of_6"
    assert len({s for _, _, s in seen}) > 1  # the candidates differ, so the choice mattered


def test_knockout_tournament_with_an_annotator_finds_the_longest():
    from farm.methods.scorers import knockout
    from farm.types import Annotation

    class PreferLonger:  # a real (rule-based) annotator, not a stand-in for the code under test
        name = "longer"

        def identity(self):
            return "longer"

        def annotate(self, pairs, seed=0):
            return [Annotation(p, float(len(p.output_2) > len(p.output_1)), self.name) for p in pairs]

    cands = [["aa", "a", "aaaaa", "aaa", "aaaa"], ["x", "xxx", "xx"]]
    assert knockout(PreferLonger(), [{"instruction": "i"}] * 2, cands, seed=3) == [2, 1]


def test_expert_iteration_round_changes_every_parameter(tiny, tmp_path):
    from farm.methods.expert_iteration import expert_iteration

    model, tok = load_causal_lm(tiny, device="cpu")
    before = _params(model)
    scorer = FunctionScorer(lambda i, x, o: -abs(len(o) - 5))
    out = expert_iteration(model, tok, RECORDS[:16], scorer, rounds=2, n=2, prompts_per_round=8,
                           tc=TrainConfig(lr=3e-3, per_device_batch_size=4, epochs=1, progress=False),
                           max_new_tokens=8, out_dir=tmp_path)
    _assert_all_changed(before, out["model"])
    assert [h["round"] for h in out["rounds"]] == [0, 1] and (tmp_path / "round_1" / "winners.json").exists()
    again = expert_iteration(model, tok, RECORDS[:16], scorer, rounds=2, n=2, prompts_per_round=8,
                             tc=TrainConfig(lr=3e-3, per_device_batch_size=4, progress=False), out_dir=tmp_path)
    assert all(h.get("resumed") for h in again["rounds"])  # finished rounds are not redone


# ----- the command line -----

def test_farm_train_cli_runs_sft_reward_and_best_of_n_from_files(tiny, tmp_path, capsys):
    from farm.cli import main
    from farm.io import read_model_outputs, write_records
    from farm.models.loading import is_complete_checkpoint

    write_records(tmp_path / "sft.jsonl", RECORDS[:16])
    write_records(tmp_path / "prefs.jsonl", [{"instruction": p["instruction"], "output_1": p["rejected"],
                                              "output_2": p["chosen"], "p_output_2": 1.0} for p in PREFS[:40]])
    (tmp_path / "sft.yaml").write_text(f"policy: {tiny}\ndata: {tmp_path / 'sft.jsonl'}\noutput_dir: {tmp_path / 'sft'}\n"
                                       "train:\n  per_device_batch_size: 8\n  max_steps: 2\n")
    assert main(["train", "sft", "--config", str(tmp_path / "sft.yaml"), "train.lr=1e-3", "train.progress=false"]) == 0
    assert is_complete_checkpoint(tmp_path / "sft" / "model")
    assert json.loads((tmp_path / "sft" / "metrics.json").read_text())["steps"] == 2
    assert main(["train", "reward", f"policy={tmp_path / 'sft' / 'model'}", f"data={tmp_path / 'prefs.jsonl'}",
                 f"output_dir={tmp_path / 'rm'}", "train.per_device_batch_size=8", "train.progress=false",
                 "max_len=64"]) == 0
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == 4 and metrics["n_train_pairs"] == 36
    assert main(["train", "best_of_n", f"policy={tmp_path / 'sft' / 'model'}", f"prompts={tmp_path / 'sft.jsonl'}",
                 f"reward_model={tmp_path / 'rm' / 'model'}", f"output_dir={tmp_path / 'bon'}", "n=2",
                 "max_new_tokens=6", "device=cpu"]) == 0
    assert len(read_model_outputs(tmp_path / "bon" / "model_outputs.json")) == 16
    # a tournament judged by a named annotator (the world's rule judge that prefers the longer output)
    assert main(["train", "best_of_n", f"policy={tmp_path / 'sft' / 'model'}", f"prompts={tmp_path / 'sft.jsonl'}",
                 "annotator=longest", f"output_dir={tmp_path / 'bon_judge'}", "n=4", "max_new_tokens=6",
                 "device=cpu"]) == 0
    outs = read_model_outputs(tmp_path / "bon_judge" / "model_outputs.json")
    assert len(outs) == 16 and (tmp_path / "bon_judge" / "annotations.sqlite").exists()
    assert main(["train", "sft", "polcy=x"]) == 2 and "did you mean 'policy'" in capsys.readouterr().err


# ----- LoRA (peft) -----

@pytest.mark.parametrize("method", ["sft", "reward"])
def test_lora_trains_only_adapters_resumes_and_saves_a_merged_model(tiny, tmp_path, method):
    pytest.importorskip("peft")
    from farm.config import from_dict
    from farm.io import write_records
    from farm.methods import load_method
    from farm.methods.loop import maybe_lora

    module = load_method(method)
    if method == "sft":
        write_records(tmp_path / "data.jsonl", RECORDS[:16])
        load = load_causal_lm
    else:
        write_records(tmp_path / "data.jsonl", [{"instruction": p["instruction"], "output_1": p["rejected"],
                                                 "output_2": p["chosen"], "p_output_2": 1.0} for p in PREFS[:20]])
        load = load_scalar_model
    train = {"lr": 1e-2, "per_device_batch_size": 8, "max_steps": 2, "lora_r": 4, "progress": False}

    def cfg(out, **kw):
        extra = {"max_len": 64, "eval_fraction": 0.2} if method == "reward" else {}
        return from_dict(module.Config, {"policy": tiny, "data": str(tmp_path / "data.jsonl"),
                                         "output_dir": str(tmp_path / out), **extra, "train": {**train, **kw}})

    m = maybe_lora(load(tiny, device="cpu")[0], cfg("x").train)
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k or "score" in k for k in trainable)
    module.run(cfg("a"))
    module.run(cfg("b", stop_at_step=1))
    assert not (tmp_path / "b" / "model").exists()  # stopped early: only the checkpoint
    module.run(cfg("b"))
    init = _params(load(tiny, device="cpu")[0])
    a, b = _params(load(str(tmp_path / "a" / "model"), device="cpu")[0]), _params(load(str(tmp_path / "b" / "model"),
                                                                                         device="cpu")[0])
    assert set(a) == set(init)  # merged: a plain transformers model again
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], init["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(a["model.layers.0.mlp.up_proj.weight"], init["model.layers.0.mlp.up_proj.weight"])  # no adapter
    _assert_same(a, b, atol=1e-6)  # resumed == uninterrupted
