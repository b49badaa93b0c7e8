"""Property-based tests (hypothesis) of every reader of user files: JSON/JSONL records (plain and .gz), pairs,
annotations (ours and AlpacaEval's preference codes), PandaLM human files, model outputs, preference files for
training, YAML configs through farm.config.load_config, and judge folders' config.yaml.

The property, for any input: the reader returns correct values or raises FarmError naming the file (and, for a
bad record, its line and field). Never another exception from deep inside json/gzip/yaml, never a number that
differs from what an independent oracle reads in the record (AlpacaEval 1/2/1.5/0 codes, PandaLM 0/1/2, our
p_output_2 in [0, 1])."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.errors import FarmError
from farm.io import (
    read_annotations,
    read_model_outputs,
    read_pairs,
    read_pandalm_humans,
    read_records,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
SUFFIXES = [".json", ".jsonl", ".json.gz", ".jsonl.gz"]

# values as real files hold them: strings, numbers (also NaN/inf, huge), booleans, null, nested junk
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(["", "1", "2", "1.5", "0", "Tie", "garbage", "nan", "inf", "-1", "2.0", "x"]),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                            max_size=3), max_leaves=6)
FIELDS = ["instruction", "input", "output_1", "output_2", "output", "generator", "p_output_2", "preference",
          "annotator1", "annotator2", "annotator3", "idx", "response1", "response2", "cmp_key", "chosen",
          "rejected", "price_per_example", "id", "annotator"]
records = st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), min_size=1, max_size=4)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def encode(recs: list, path: Path) -> bytes:
    if ".jsonl" in path.name:
        return "".join(json.dumps(r) + "\n" for r in recs).encode()
    return json.dumps(recs).encode()


def check_error(e: FarmError, path: Path, n_records: int | None = None) -> None:
    assert e.file == str(path), e
    if n_records is not None and e.line is not None:
        assert 1 <= e.line <= max(n_records, 1), e


# ----- raw bytes: any file at all -----

@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                      st.lists(st.sampled_from(['{"a": 1}', "[", "]", "{", "}", '"x"', "1", "null", "\n", ",",
                                                '{"instruction": "i"}', "NaN", "\ud800".encode("utf-8", "surrogatepass")
                                                .decode("latin-1"), "\x00", "[[[[[[[["]), max_size=30).map(
                          lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))),
       suffix=st.sampled_from(SUFFIXES + [".gz-corrupt"]))
def test_any_bytes_give_records_or_a_farm_error(tmp_path_factory, data, suffix):
    d = tmp_path_factory.mktemp("raw")
    if suffix == ".gz-corrupt":  # a gzip file damaged in the middle
        path = d / "f.jsonl.gz"
        blob = bytearray(gzip.compress(data or b'{"a": 1}\n'))
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    else:
        path = write(d / f"f{suffix}", data)
    try:
        out = read_records(path)
    except FarmError as e:
        check_error(e, path)
        return
    assert isinstance(out, list) and all(isinstance(r, dict) for r in out)


def test_deeply_nested_json_is_a_farm_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FarmError) as e:
        read_records(path)
    check_error(e.value, path)


# ----- structured records: each reader against an oracle -----

def oracle_preference(rec: dict) -> float | None | str:
    """What a careful reader makes of a record's preference: a float, None (missing/NaN), or "error"."""
    if "p_output_2" in rec:
        v = rec["p_output_2"]
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "error"
        if math.isnan(v):
            return None
        return float(v) if 0 <= v <= 1 else "error"
    if "preference" in rec:
        v = rec["preference"]
        if v is None:
            return None
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("", "nan", "none", "null"):
                return None
            try:
                v = float(s)
            except ValueError:
                return "error"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "error"
        if math.isnan(v):
            return None
        if v == 0:
            return 0.5
        return float(v) - 1.0 if 1 <= v <= 2 else "error"
    return "error"


def as_text(v) -> str | None:
    """A field that must be text: strings, and numbers written where text was meant; else None (error)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


@SETTINGS
@given(recs=records, suffix=st.sampled_from(SUFFIXES))
def test_pairs_and_annotations_match_the_oracle_or_fail_clearly(tmp_path_factory, recs, suffix):
    path = write(tmp_path_factory.mktemp("ann") / f"a{suffix}", b"")
    write(path, encode(recs, path))
    try:
        pairs = read_pairs(path)
    except FarmError as e:
        check_error(e, path, len(recs))
        assert e.field in ("instruction", "output_1", "output_2", "input", "generator_1", "generator_2"), e
        assert any(e.field not in r or as_text(r.get(e.field)) is None for r in recs)
    else:
        for p, r in zip(pairs, recs, strict=True):
            assert (p.instruction, p.output_1, p.output_2) == tuple(as_text(r[k]) for k in
                                                                     ("instruction", "output_1", "output_2"))
    try:
        anns = read_annotations(path)
    except FarmError as e:
        check_error(e, path, len(recs))
        assert e.line is not None and e.field is not None, e
        return
    for a, r in zip(anns, recs, strict=True):
        want = oracle_preference(r)
        assert want != "error", (r, a.preference)
        assert a.preference == want or (want is not None and a.preference is not None
                                        and math.isclose(a.preference, want, abs_tol=1e-12)), (r, a.preference)
        assert math.isfinite(a.price) and math.isfinite(a.time)


PANDALM_LABEL = {0: 0.5, 1: 0.0, 2: 1.0}


@SETTINGS
@given(recs=st.lists(st.fixed_dictionaries(
    {"idx": st.one_of(st.integers(0, 9), st.text(max_size=3), st.none(), st.booleans()),
     "instruction": st.one_of(st.text(max_size=5), st.none(), st.lists(st.text(), max_size=1)),
     "response1": st.text(max_size=5), "response2": st.one_of(st.text(max_size=5), st.integers(0, 3)),
     "annotator1": st.one_of(st.sampled_from([0, 1, 2, "0", "1", "2", " 2 ", "Tie", "garbage", 3, -1, None, 1.0,
                                              True, "", 2.5]))},
    optional={"annotator2": st.sampled_from([0, 1, 2, "Tie", None]), "cmp_key": st.text(max_size=8)}),
    min_size=1, max_size=4))
def test_pandalm_human_files(tmp_path_factory, recs):
    path = tmp_path_factory.mktemp("pandalm") / "testset.json"
    path.write_text(json.dumps(recs))

    def label(v):
        if isinstance(v, bool) or v is None:
            return None
        if isinstance(v, float) and not v.is_integer():
            return None  # 2.5 is not a label (int("2.5") fails; a float 1.0 reads as "1.0": also not a label)
        try:
            n = int(str(v).strip())
        except ValueError:
            return None
        return PANDALM_LABEL.get(n)

    try:
        out = read_pandalm_humans(path)
    except FarmError as e:
        check_error(e, path, len(recs))
        assert e.line is not None and e.field is not None
        return
    for o, r in zip(out, recs, strict=True):
        want = [label(r[k]) for k in ("annotator1", "annotator2", "annotator3") if k in r]
        assert None not in want and o["human"] == want, (r, o["human"])
        assert o["output_2"] == as_text(r["response2"])


@SETTINGS
@given(recs=records, suffix=st.sampled_from(SUFFIXES))
def test_model_outputs_and_training_preferences(tmp_path_factory, recs, suffix):
    from farm.methods.data import read_preferences

    path = write(tmp_path_factory.mktemp("mo") / f"m{suffix}", b"")
    write(path, encode(recs, path))
    for reader in (read_model_outputs, read_preferences):
        try:
            out = reader(path)
        except FarmError as e:
            check_error(e, path, len(recs))
            continue
        for o in out:
            assert all(isinstance(v, (str, float)) for v in o.values()), o
            if "p_chosen" in o:
                assert 0.5 <= o["p_chosen"] <= 1.0


# ----- YAML configs and judge folders -----

yaml_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=5)


def config_texts(keys: list[str]):
    as_yaml = st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), yaml_values, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True))
    broken = st.lists(st.sampled_from(["a: 1\n", "  b: [\n", "- x\n", ": :\n", "{", "'\n", "\t", "!!python/object:os.system\n",
                                       "&a [*a]\n", "lr: .nan\n", "x: !!binary AAAA\n", "k: 1e999\n"]),
                      max_size=8).map("".join)
    return st.one_of(as_yaml, broken, st.text(max_size=60))


@SETTINGS
@given(text=config_texts(["policy", "data", "output_dir", "max_len", "prompt_style", "style", "train", "lr", "epochs",
                                   "seed"]))
def test_yaml_method_configs(tmp_path_factory, text):
    from farm.config import load_config
    from farm.methods.sft import Config

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(Config, path)
    except FarmError as e:
        assert e.file is not None and str(path) in e.file, e
        return
    assert isinstance(cfg, Config)


@SETTINGS
@given(text=config_texts(["backend", "model", "parser", "batch_size", "concurrency", "temperature", "max_tokens",
                          "prompt", "randomize_order", "noise", "members", "timeout", "price_per_1k_input"]))
def test_judge_folder_configs(tmp_path_factory, text):
    from farm.annotators import load_annotator

    folder = tmp_path_factory.mktemp("judge")
    (folder / "prompt.txt").write_text("<output_a>{output_1}</output_a> <output_b>{output_2}</output_b>")
    (folder / "config.yaml").write_text(text, encoding="utf-8")
    try:
        judge = load_annotator(str(folder))
    except FarmError as e:
        assert e.file is None or str(folder) in e.file or "annotator_prompts" in e.file, e
        assert e.file is not None or e.field is not None, e
        return
    assert judge.identity()


# ----- recorded judge verdicts (PandaLM GPT-3.5 style: '1', '2', 'Tie', 'garbage') through the replay judge -----

VERDICTS = [1, 2, 0, "1", "2", "0", "Tie", "tie", " Tie ", "garbage", "", None, 3, -1, 1.5, True, [], {}, "2 "]


def pandalm_verdict(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    s = str(v).strip().lower()
    return {"0": 0.5, "tie": 0.5, "1": 0.0, "2": 1.0}.get(s)


@SETTINGS
@given(verdicts=st.lists(st.sampled_from(VERDICTS), min_size=1, max_size=8),
       swapped=st.lists(st.booleans(), min_size=8, max_size=8))
def test_replayed_pandalm_judge_files(tmp_path_factory, verdicts, swapped):
    from dataclasses import replace

    from farm.annotators import load_annotator
    from farm.types import Pair

    folder = tmp_path_factory.mktemp("replay")
    recs = [{"idx": i, "gpt_result": v, "gpt_reason": f"reason {i}"} for i, v in enumerate(verdicts)]
    (folder / "gpt.json").write_text(json.dumps(recs))
    (folder / "config.yaml").write_text("backend: replay\nfiles: [gpt.json]\nkey: id\nid_field: idx\n"
                                        "preference_field: gpt_result\npreference_format: pandalm\n"
                                        "randomize_order: false\n")
    judge = load_annotator(str(folder))
    pairs = [Pair(f"i{i}", "a", "b", id=str(i)) for i in range(len(verdicts) + 1)]  # the last has no record
    shown = [replace(p.swapped(), meta={"swapped": True}) if s else p for p, s in zip(pairs, swapped)]
    anns = judge.annotate(shown)
    for i, (a, s) in enumerate(zip(anns, swapped)):
        want = pandalm_verdict(verdicts[i]) if i < len(verdicts) else None
        if want is not None and s:
            want = 1.0 - want  # the record is in PandaLM's order; the pair was shown swapped
        assert a.preference == want, (verdicts[i] if i < len(verdicts) else "no record", s, a.preference)
        if i < len(verdicts) and want is None:
            assert a.raw.startswith(str(verdicts[i]))  # an invalid verdict keeps the recorded text


# ----- decoding errors name the line; written files respect the umask -----

@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz"])
def test_a_byte_that_is_not_utf8_is_reported_with_its_line(tmp_path, suffix):
    import gzip

    from farm.errors import FarmError
    from farm.io import read_records

    data = b'{"a": 1}\n{"b": 2}\n{"c": "caf\xe9"}\n'
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    with pytest.raises(FarmError) as e:
        read_records(path)
    assert e.value.line == 3 and "0xe9" in str(e.value) and "column 11" in str(e.value)


def test_a_utf8_bom_is_skipped(tmp_path):
    from farm.io import read_records

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert read_records(path) == [{"a": 1}]


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, expected):
    import os

    from farm.io import atomic_write_text, write_records

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "# x\n")
        write_records(tmp_path / "a.jsonl", [{"x": 1}])
        with open(tmp_path / "plain.txt", "w") as f:  # what a plain open gives, for comparison
            f.write("x")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"report.md": expected, "a.jsonl": expected, "plain.txt": expected}


def test_replacing_a_file_keeps_its_mode(tmp_path):
    from farm.io import atomic_write_text

    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    path.chmod(0o640)
    atomic_write_text(path, "a: 2\n")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "a: 2\n"
