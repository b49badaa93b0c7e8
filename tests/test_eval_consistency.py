"""Both orders: swapped pairs, folding two verdicts into one, position consistency and self-consistency per judge
(by hand), `farm evaluate --both-orders`, and swapped verdicts counted in `farm agreement`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from farm.eval.consistency import consistency_table, fold_orders, with_both_orders
from farm.types import Annotation, Pair


def test_with_both_orders_and_fold():
    pairs = [Pair("q1", "a", "bb", generator_1="base", generator_2="m"), Pair("q2", "same", "same")]
    both = with_both_orders(pairs)
    assert [(p.output_1, p.output_2) for p in both] == [("a", "bb"), ("bb", "a"), ("same", "same")]
    assert both[1].generator_1 == "m" and both[1].generator_2 == "base"
    anns = [Annotation(both[0], 1.0, "j"), Annotation(both[1], 0.5, "j"), Annotation(both[2], 0.5, "j")]
    folded = fold_orders(anns)
    # pair 1: 1.0 in its own order, 0.5 swapped → 1 − 0.5 = 0.5 in its order; mean 0.75
    assert [a.preference for a in folded] == [0.75, 0.5] and folded[0].pair == both[0]
    assert fold_orders([Annotation(both[0], None, "j"), Annotation(both[1], 0.0, "j")])[0].preference == 1.0


def test_position_and_self_consistency_by_hand():
    p1, p2 = Pair("q1", "a", "b"), Pair("q2", "c", "d")
    anns = [
        # judge "fair": prefers b in both orders → consistent on q1; on q2 a tie both ways → consistent
        Annotation(p1, 1.0, "fair"), Annotation(p1.swapped(), 0.0, "fair"),
        Annotation(p2, 0.5, "fair"), Annotation(p2.swapped(), 0.5, "fair"),
        # judge "first": always prefers the first output shown → inconsistent on both pairs
        Annotation(p1, 0.0, "first"), Annotation(p1.swapped(), 0.0, "first"),
        Annotation(p2, 0.0, "first"), Annotation(p2.swapped(), 0.0, "first"),
        # "first" asked q1 again in the same order, once agreeing and once not
        Annotation(p1, 0.0, "first"), Annotation(p1, 1.0, "first"),
    ]
    t = consistency_table(anns)
    assert t.loc["fair", "position_consistency"] == 100.0 and t.loc["fair", "p_prefer_first_both_orders"] == 0.5
    # first on q1: forward verdicts [0, 0, 1] vs swapped [0]: mirror of swapped 0 (first) is 2 (second); only
    # the forward 1.0 matches → 1 of 3; q2: 0 of 1 → 1 / 4 combinations
    assert t.loc["first", "position_consistency"] == pytest.approx(25.0)
    # repeats of q1 forward: classes [0, 0, 2] → pairs (0,0) same, (0,2) (0,2) differ → 1 / 3
    assert t.loc["first", "self_consistency"] == pytest.approx(100 / 3)
    assert np.isnan(t.loc["fair", "self_consistency"]) and t.loc["first", "n_pairs_both_orders"] == 2


def test_evaluate_both_orders_counts_each_pair_once(tmp_path, capsys):
    from farm.eval.cli_evaluate import main as evaluate_main
    from farm.io import read_annotations

    base = tmp_path / "base.json"
    base.write_text(json.dumps([{"instruction": f"q{i}", "output": "x" * 10, "generator": "base"} for i in range(5)]))
    model = tmp_path / "a.json"
    model.write_text(json.dumps([{"instruction": f"q{i}", "output": "y" * (20 if i < 3 else 5), "generator": "a"}
                                 for i in range(5)]))
    out = tmp_path / "out"
    assert evaluate_main(["--model-outputs", str(model), "--baseline-outputs", str(base), "--annotator", "longest",
                          "--out-dir", str(out), "--n-boot", "0", "--no-progress", "--both-orders"]) == 0
    printed = capsys.readouterr().out
    assert "position consistency" in printed
    assert len(read_annotations(out / "annotations.jsonl")) == 10  # every pair asked twice
    lb = pd.read_csv(out / "leaderboard.csv", index_col=0)
    assert lb.loc["a", "n_total"] == 5 and lb.loc["a", "win_rate"] == pytest.approx(60.0)  # folded: once each


def test_agreement_counts_a_swapped_verdict_for_its_pair(tmp_path):
    from farm.eval.agreement import evaluate_judges

    humans = tmp_path / "h.jsonl"
    humans.write_text("\n".join(json.dumps({"instruction": f"q{i}", "output_1": "a", "output_2": f"b{i}",
                                            "human": [1.0, 1.0]}) for i in range(4)))
    judge = tmp_path / "j.jsonl"
    recs = []
    for i in range(4):  # both orders; the judge always says "second": right once, wrong once per pair
        recs.append({"instruction": f"q{i}", "output_1": "a", "output_2": f"b{i}", "p_output_2": 1.0})
        recs.append({"instruction": f"q{i}", "output_1": f"b{i}", "output_2": "a", "p_output_2": 1.0})
    judge.write_text("\n".join(json.dumps(r) for r in recs))
    t = evaluate_judges(humans, [judge], n_boot=0)
    row = t.loc["j"]
    assert row["agreement"] == pytest.approx(50.0) and row["n_parsed"] == 8  # the swapped verdict counts, flipped
    assert row["position_consistency"] == 0.0 and row["n_pairs_both_orders"] == 4
