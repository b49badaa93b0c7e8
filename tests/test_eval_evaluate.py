"""`farm evaluate`: join model outputs to the baseline, annotate (cached), write annotations and a leaderboard."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval.cli_evaluate import build_pairs
from farm.eval.cli_evaluate import main as evaluate_main
from farm.io import read_annotations


def _write(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def test_evaluate_with_an_offline_judge(tmp_path, capsys):
    base = _write(tmp_path / "base.json", [{"instruction": f"q{i}", "output": "x" * 10, "generator": "base"}
                                           for i in range(6)])
    # model a: longer on 4 of 5 matched instructions; q9 has no baseline → skipped
    a = _write(tmp_path / "a.json", [{"instruction": f"q{i}", "output": "y" * (20 if i < 4 else 5),
                                      "generator": "a"} for i in [0, 1, 2, 3, 4, 9]])
    b = _write(tmp_path / "b.json", [{"instruction": f"q{i}", "output": "z" * 3, "generator": "b"}
                                     for i in range(6)])
    out = tmp_path / "out"
    argv = ["--model-outputs", a, b, "--baseline-outputs", base, "--annotator", "longest", "--out-dir", str(out),
            "--n-boot", "100", "--no-progress", "--plot", str(tmp_path / "w.png")]
    assert evaluate_main(argv) == 0
    captured = capsys.readouterr()
    assert "a: 1 output(s) have no baseline" in captured.err
    lb = pd.read_csv(out / "leaderboard.csv", index_col=0)
    assert lb.loc["a", "win_rate"] == pytest.approx(80.0) and lb.loc["a", "n_total"] == 5
    assert lb.loc["b", "win_rate"] == pytest.approx(0.0) and lb.loc["b", "avg_length"] == 3
    anns = read_annotations(out / "annotations.jsonl")
    assert {x.pair.generator_1 for x in anns} == {"base"} and len(anns) == 11
    assert all(x.pair.output_1 == "x" * 10 for x in anns)  # output_1 is always the baseline
    assert "annotated by longest" in captured.out
    # a re-run (verdicts cached for LLM judges; this rule judge recomputes) writes the same leaderboard
    assert evaluate_main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv", index_col=0), lb)


def test_bad_inputs_are_farm_errors(tmp_path):
    base = _write(tmp_path / "base.json", [{"instruction": "q", "output": "x", "generator": "base"}] * 2)
    a = _write(tmp_path / "a.json", [{"instruction": "q", "output": "y", "generator": "a"}])
    with pytest.raises(FarmError, match="twice in the baseline"):
        build_pairs([a], base)
    other = _write(tmp_path / "other.json", [{"instruction": "zzz", "output": "x", "generator": "base"}])
    with pytest.raises(FarmError, match="no model output matches"):
        build_pairs([a], other)


def test_replayed_gpt4_reproduces_published_rows(shared_data, tmp_path):
    """Outputs taken from two AlpacaEval annotation files, re-judged by the replayed GPT-4 judge."""
    folder = shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4"
    files = []
    for name in ("alpaca-7b", "guanaco-65b"):
        records = json.loads(gzip.open(folder / f"{name}.json.gz").read())
        files.append(_write(tmp_path / f"{name}.json", [{"instruction": r["instruction"], "output": r["output_2"],
                                                         "generator": r["generator_2"]} for r in records]))
        base = _write(tmp_path / "base.json", [{"instruction": r["instruction"], "output": r["output_1"],
                                                "generator": r["generator_1"]} for r in records])
    out = tmp_path / "out"
    assert evaluate_main(["--model-outputs", *files, "--baseline-outputs", base, "--annotator",
                          "alpaca_eval_gpt4_replay", "--out-dir", str(out), "--n-boot", "0", "--no-progress"]) == 0
    ours = pd.read_csv(out / "leaderboard.csv", index_col=0)
    ref = pd.read_csv(shared_data / "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv",
                      index_col=0).loc[ours.index]
    for col in ("win_rate", "standard_error", "n_wins", "n_draws", "n_total", "avg_length"):
        np.testing.assert_allclose(ours[col], ref[col], atol=1e-6, err_msg=col)


def test_evaluate_a_checkpoint_on_an_eval_set(tmp_path, capsys):
    from farm.models.tiny import TinySpec, build_tiny

    texts = [f"Instruction: say {w}. Response: {w} {w}" for w in ("red", "blue", "green", "cat", "dog")] * 20
    ckpt = build_tiny(texts, tmp_path / "dpo" / "model", TinySpec(max_positions=96), seed=0)
    eval_set = _write(tmp_path / "eval.json", [{"instruction": f"say {w}", "input": ""} for w in ("red", "dog", "sun")])
    base = _write(tmp_path / "base.json", [{"instruction": f"say {w}", "output": "", "generator": "empty"}
                                           for w in ("red", "dog", "sun")])
    out = tmp_path / "out"
    assert evaluate_main(["--checkpoint", str(ckpt), "--eval-set", eval_set, "--baseline-outputs", base,
                          "--annotator", "longest", "--out-dir", str(out), "--max-new-tokens", "8",
                          "--n-boot", "0", "--no-progress"]) == 0
    outputs = json.loads((out / "outputs_dpo.json").read_text())
    assert [o["instruction"] for o in outputs] == ["say red", "say dog", "say sun"]
    assert {o["generator"] for o in outputs} == {"dpo"}
    lb = pd.read_csv(out / "leaderboard.csv", index_col=0)
    # "longest" prefers any non-empty output over the empty baseline: the win rate counts non-empty answers
    expected = 100 * np.mean([1.0 if o["output"] else 0.5 for o in outputs])
    assert lb.loc["dpo", "win_rate"] == pytest.approx(expected) and lb.loc["dpo", "n_total"] == 3
    with pytest.raises(SystemExit):
        evaluate_main(["--checkpoint", str(ckpt), "--baseline-outputs", base, "--annotator", "longest"])
