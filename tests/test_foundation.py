"""Foundation: types, readers/writers, config, CLI."""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys

import pytest

from farm.config import from_dict, load_config, parse_overrides
from farm.errors import FarmError
from farm.io import (
    read_annotations,
    read_pairs,
    read_records,
    write_annotations,
    write_records,
)
from farm.types import Annotation, Pair, from_alpaca_eval, pair_rng, to_alpaca_eval


def test_alpaca_eval_preference_codes_round_trip():
    for code, p in [(1, 0.0), (2, 1.0), (1.5, 0.5), (0, 0.5), ("2", 1.0), ("1.25", 0.25)]:
        assert from_alpaca_eval(code) == p
    for p in (0.0, 0.3, 0.5, 1.0):
        assert from_alpaca_eval(to_alpaca_eval(p)) == pytest.approx(p)
    with pytest.raises(ValueError):
        from_alpaca_eval(3)
    with pytest.raises(ValueError):
        from_alpaca_eval("garbage")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".json.gz", ".jsonl.gz"])
def test_records_round_trip(tmp_path, suffix):
    recs = [{"instruction": "é", "output_1": "a", "output_2": "b", "x": i} for i in range(3)]
    path = write_records(tmp_path / f"r{suffix}", recs)
    assert read_records(path) == recs
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_alpaca_eval_annotations_round_trip_unchanged(shared_data, tmp_path):
    src = sorted((shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4").glob("*.json.gz"))[0]
    raw = json.loads(gzip.open(src).read())
    anns = read_annotations(src)
    assert len(anns) == len(raw)
    for a, r in zip(anns, raw):
        assert a.pair.output_2 == r["output_2"] and a.pair.generator_2 == r["generator_2"]
        if r["preference"] is None:
            assert a.preference is None
        else:
            assert to_alpaca_eval(a.preference) == pytest.approx(float(r["preference"]) if float(r["preference"]) != 0 else 1.5)
    out = write_annotations(tmp_path / "a.json", anns)
    again = read_annotations(out)
    assert [a.preference for a in again] == [a.preference for a in anns]
    # our files also carry AlpacaEval's code, so its tools read them
    assert read_records(out)[0]["preference"] == to_alpaca_eval(anns[0].preference)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"instruction": "a", "output_1": "x", "output_2": "y"}\n{"instruction": \n')
    with pytest.raises(FarmError) as e:
        read_pairs(p)
    assert "pairs.jsonl:2" in str(e.value)


def test_missing_field_names_field(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"instruction": "a", "output_1": "x", "output_2": "y"}\n{"instruction": "b", "output_1": "x"}\n')
    with pytest.raises(FarmError) as e:
        read_pairs(p)
    assert e.value.line == 2 and e.value.field == "output_2"


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FarmError, match="file not found"):
        read_records(tmp_path / "nope.json")


def test_pair_rng_depends_on_whole_pair_not_batch():
    a, b = Pair("same instruction", "x", "y"), Pair("same instruction", "x", "z")
    assert pair_rng(0, a).random() == pair_rng(0, a).random()
    assert pair_rng(0, a).random() != pair_rng(0, b).random()
    assert pair_rng(0, a, "judge1").random() != pair_rng(0, a, "judge2").random()


@dataclasses.dataclass
class _Inner:
    lr: float = 1e-3
    """learning rate"""


@dataclasses.dataclass
class _Cfg:
    steps: int = 10
    name: str = "x"
    flag: bool = False
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_config_rejects_unknown_and_wrong_types(tmp_path):
    with pytest.raises(FarmError) as e:
        from_dict(_Cfg, {"stepz": 3})
    assert e.value.field == "stepz" and "steps" in str(e.value)
    with pytest.raises(FarmError) as e:
        from_dict(_Cfg, {"steps": "many"})
    assert e.value.field == "steps"
    with pytest.raises(FarmError) as e:
        from_dict(_Cfg, {"inner": {"lr": True}})
    assert e.value.field == "inner.lr"
    y = tmp_path / "c.yaml"
    y.write_text("steps: 5\ninner:\n  lr: 0.5\n")
    cfg = load_config(_Cfg, y, ["inner.lr=1e-5", "flag=true"])
    assert cfg.steps == 5 and cfg.inner.lr == 1e-5 and cfg.flag is True
    y.write_text("steps: 5\n  bad: [\n")
    with pytest.raises(FarmError) as e:
        load_config(_Cfg, y)
    assert "c.yaml" in str(e.value)
    assert parse_overrides(["a.b=2"]) == {"a": {"b": 2}}


def test_annotation_record_never_uses_codes_internally():
    a = Annotation(Pair("i", "a", "b"), 1.0, "judge")
    rec = a.to_record()
    assert rec["p_output_2"] == 1.0 and rec["preference"] == 2.0


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "farm", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("ls", "annotate", "train", "evaluate", "leaderboard", "agreement", "compare"):
        assert f"  {cmd} " in out
    bad = subprocess.run([sys.executable, "-m", "farm", "compar"], capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean 'compare'" in bad.stderr
