"""Judge meta-evaluation: every figure on a hand-worked example, the file adapters, and PandaLM's real numbers."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval.agreement import agreement_table, evaluate_judges, read_humans, read_judge
from farm.eval.cli_agreement import main as agreement_main


def _humans() -> pd.DataFrame:
    # lengths: pair 0 short vs long, pair 1 equal, pair 2 long vs short, pair 3 equal
    rows = [("a" * 10, "b" * 100, [1.0, 1.0, 0.0]),   # majority: output_2
            ("c" * 50, "d" * 50, [0.5, 0.5, 1.0]),    # majority: tie
            ("e" * 100, "f" * 10, [0.0, 1.0, 0.5]),   # no majority: each class with probability 1/3
            ("g" * 20, "h" * 20, [0.0, 0.0, 0.0])]    # majority: output_1
    return pd.DataFrame([{"idx": i, "instruction": f"i{i}", "input": "", "output_1": o1, "output_2": o2,
                          "generator_1": "x", "generator_2": "y", "human": h} for i, (o1, o2, h) in enumerate(rows)])


def test_every_figure_by_hand():
    t = agreement_table(_humans(), {"judge": [[1.0], [0.5], [0.0], [None]]}, n_boot=200)
    j, h = t.loc["judge"], t.loc["humans"]
    # ties as a class: 1 + 1 + 1/3 + 0 (unparsed = wrong) over 4
    assert j["agreement"] == pytest.approx(100 * (7 / 3) / 4)
    assert j["n_agree"] == pytest.approx(7 / 3)
    # without ties: only pair 0 (single non-tie majority, parsed non-tie verdict) → agrees
    assert j["agreement_no_ties"] == pytest.approx(100.0)
    # soft (AlpacaEval): pair 0: 1, pair 1: 1, pair 2: (1 + .5 + 0)/3; unparsed left out
    assert j["agreement_soft"] == pytest.approx(100 * 2.5 / 3)
    assert j["bias"] == pytest.approx(100 - 100 * 2.5 / 3)  # one verdict per pair: 100 − soft agreement
    assert np.isnan(j["variance"])  # needs ≥ 2 verdicts per pair
    # vs all humans but one: pair 0: (.5+.5+1)/3, pair 1: (.5+.5+1)/3, pair 2: (0+.5+.5)/3, pair 3: 0
    assert j["agreement_loo"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1 / 3 + 0) / 4)
    assert (j["n_pairs"], j["n_parsed"], j["n_unparsed"]) == (4, 3, 1)
    # longer: pair 0 chose output_2 (longer), pair 2 chose output_1 (longer); tie and equal lengths left out
    assert j["p_prefer_longer"] == pytest.approx(1.0)
    assert j["p_prefer_first"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert j["agreement_ci_low"] <= j["agreement"] <= j["agreement_ci_high"]

    # humans, leave one out: pair 0: .5 .5 0; pair 1: .5 .5 0; pair 2: 0 0 0; pair 3: 1 1 1 → 5/12
    assert h["agreement"] == pytest.approx(100 * 5 / 12)
    assert h["n_agree"] == pytest.approx(5.0)
    assert h["bias"] == 0.0
    # soft LOO: pair 0: (.5·1+.5·0), same, (0 vs [1,1]) 0 | pair 1: .5·1+.5·.5, same, (1 vs [.5,.5]) .5 |
    # pair 2: 0 vs {1, .5}: (0+.5)/2, 1 vs {0, .5}: (0+.5)/2, .5 vs {0, 1}: .5 | pair 3: 1, 1, 1
    soft = (0.5 + 0.5 + 0 + 0.75 + 0.75 + 0.5 + 0.25 + 0.25 + 0.5 + 3) / 12
    assert h["agreement_soft"] == pytest.approx(100 * soft)
    assert h["variance"] == pytest.approx(100 - 100 * soft)
    # no ties: h non-tie with a single non-tie majority of the others: pair 0 human 3 (0 vs [1,1]) → wrong;
    # pair 3 all three → right. Pair 0 humans 1, 2 have others [1, 0] (no single majority).
    assert h["agreement_no_ties"] == pytest.approx(100 * 3 / 4)
    # humans' longer: pair 0: 1, 1, 0 (two prefer longer); pair 2: 0 → longer, 1 → shorter, .5 left out
    assert h["p_prefer_longer"] == pytest.approx(3 / 5)


def test_variance_and_bias_with_several_verdicts_per_pair():
    humans = _humans().iloc[[0]].reset_index(drop=True)  # humans' majority: output_2
    t = agreement_table(humans, {"j": [[1.0, 1.0, 0.0]]}, n_boot=0)
    # each verdict against the majority of the other two: 1 vs {1, 0} → .5, again .5, 0 vs [1, 1] → 0
    assert t.loc["j", "variance"] == pytest.approx(100 - 100 * 1 / 3)
    # the judge's own majority (output_2) agrees with the humans': bias 0
    assert t.loc["j", "bias"] == pytest.approx(0.0)
    assert t.loc["j", "agreement"] == pytest.approx(100 * 2 / 3)


def test_prefer_lists():
    humans = pd.DataFrame([{"idx": 0, "instruction": "i", "input": "", "output_1": "plain text",
                            "output_2": "- one\n- two", "generator_1": "", "generator_2": "", "human": [1.0]},
                           {"idx": 1, "instruction": "j", "input": "", "output_1": "1. a\n2. b",
                            "output_2": "prose - with a hyphen", "generator_1": "", "generator_2": "",
                            "human": [1.0]}])
    t = agreement_table(humans, {"j": [[1.0], [0.0]]}, n_boot=0)
    assert t.loc["j", "p_prefer_lists"] == pytest.approx(1.0)
    assert t.loc["humans", "p_prefer_lists"] == pytest.approx(0.5)  # the second human chose the prose


def test_file_adapters_and_cli(tmp_path, capsys):
    h = _humans()
    human_file = tmp_path / "humans.jsonl"
    human_file.write_text("\n".join(json.dumps(r) for r in h.to_dict("records")))
    judge_file = tmp_path / "judge.json"  # PandaLM judge format, joined on idx
    judge_file.write_text(json.dumps([{"idx": i, "gpt_result": v} for i, v in enumerate(["2", "Tie", "1", "junk"])]))
    ours = tmp_path / "ours.jsonl"  # our annotation format, joined on content
    ours.write_text("\n".join(json.dumps({**{k: r[k] for k in ("instruction", "input", "output_1", "output_2")},
                                          "p_output_2": p, "annotator": "mine"})
                              for r, p in zip(h.to_dict("records"), [1.0, 0.5, 0.0, None])))
    t = evaluate_judges(human_file, [judge_file, ours], n_boot=0)
    assert list(t.index) == ["humans", "judge", "mine"]
    same = [c for c in t.columns if c not in ("position_consistency", "self_consistency", "n_pairs_both_orders")]
    pd.testing.assert_series_equal(t.loc["judge", same], t.loc["mine", same], check_names=False)
    assert t.loc["mine", "n_pairs_both_orders"] == 0 and pd.isna(t.loc["judge", "n_pairs_both_orders"])
    out_csv, out_png = tmp_path / "t.csv", tmp_path / "t.png"
    assert agreement_main(["--human", str(human_file), "--judge", str(judge_file), "--out", str(out_csv),
                           "--plot", str(out_png), "--n-boot", "0"]) == 0
    assert "agreement" in capsys.readouterr().out
    assert pd.read_csv(out_csv, index_col=0).loc["judge", "n_unparsed"] == 1
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"idx": 99, "gpt_result": "1"}]))
    with pytest.raises(FarmError, match="idx 99"):
        read_judge(bad, read_humans(human_file))


def test_alpaca_eval_crossannotations_are_grouped(tmp_path):
    rows = [{"instruction": "i", "output_1": "a", "output_2": "b", "preference": v} for v in (1, 2, 2, 1.5)]
    path = tmp_path / "cross.json"
    path.write_text(json.dumps(rows))
    h = read_humans(path)
    assert len(h) == 1 and h.loc[0, "human"] == [0.0, 1.0, 1.0, 0.5]


def test_pandalm_published_numbers(shared_data):
    d = shared_data / "pandalm"
    t = evaluate_judges(d / "testset-v1.json", [d / "gpt-3.5-turbo-testset-v1.json", d / "pandalm-7b-testset-v1.json"],
                        n_boot=200)
    gpt, panda = t.loc["gpt-3.5-turbo-testset-v1"], t.loc["pandalm-7b-testset-v1"]
    assert gpt["n_agree"] == 697 and gpt["n_pairs"] == 999
    assert gpt["agreement"] == pytest.approx(69.8, abs=0.05)
    assert (gpt["n_unparsed"], gpt["n_parsed"]) == (25, 974)
    assert panda["agreement"] == pytest.approx(66.8, abs=0.05)

    # human leave-one-out, recomputed here with a plain loop over the raw file
    raw = json.loads((d / "testset-v1.json").read_text())
    hits = total = 0
    for r in raw:
        labels = [int(r[f"annotator{k}"]) for k in (1, 2, 3)]
        for k in range(3):
            others = Counter(labels[:k] + labels[k + 1:]).most_common()
            modes = [c for c, n in others if n == others[0][1]]
            hits += (labels[k] in modes) / len(modes)
            total += 1
    assert t.loc["humans", "agreement"] == pytest.approx(100 * hits / total)
