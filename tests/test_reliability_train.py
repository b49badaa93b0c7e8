"""Training reliability through `farm train` itself (no patched internals): a learning rate that makes the loss
explode stops the run with a clear error and writes no model; a damaged checkpoint is detected instead of
being loaded; a checkpoint resumed after deleting a damaged one starts over cleanly."""

from __future__ import annotations

import json

import pytest
import torch

from farm.cli import main
from farm.models.generation import format_prompt
from farm.models.tiny import TinySpec, build_tiny

RECORDS = [{"instruction": f"Sort: {a} {b}", "input": "", "output": " ".join(sorted([a, b]))}
           for a in "1234" for b in "5678"]  # 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel_train")
    (d / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    build_tiny([format_prompt(r["instruction"]) + r["output"] for r in RECORDS], d / "tiny",
               TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)
    return d


def train(tiny, out, *extra: str) -> int:
    return main(["train", "sft", f"policy={tiny / 'tiny'}", f"data={tiny / 'sft.jsonl'}", f"output_dir={out}",
                 "train.per_device_batch_size=4", "train.max_steps=6", "train.save_every=1", "train.progress=false",
                 "train.lr=3e-3", *extra])


def test_an_exploding_learning_rate_stops_with_a_clear_error(tiny, tmp_path, capsys):
    rc = train(tiny, tmp_path / "o", "train.lr=1e30", "train.max_grad_norm=0")
    err = capsys.readouterr().err
    assert rc == 2
    assert "loss is" in err and ("nan" in err or "inf" in err) and "no update applied" in err, err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert 2 <= step <= 6  # the first step was finite; the blown-up weights gave a non-finite loss later
    assert not (tmp_path / "o" / "model").exists()  # no broken model is written
    # the last checkpoint is the last step that was applied: nothing after the bad loss was saved
    assert (tmp_path / "o" / "checkpoint" / "model" / "step.txt").read_text().strip() == str(step - 1)


@pytest.mark.parametrize("damage", ["truncate_state", "garble_state", "flip_weight_byte", "truncate_weights",
                                    "drop_weights"])
def test_a_damaged_checkpoint_is_detected_not_loaded(tiny, tmp_path, capsys, damage):
    out = tmp_path / "o"
    assert train(tiny, out, "train.stop_at_step=2") == 0
    ckpt, state = out / "checkpoint" / "model", out / "checkpoint" / "state.pt"
    weights = ckpt / "model.safetensors"
    if damage == "truncate_state":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garble_state":
        state.write_bytes(b"not a checkpoint at all")
    elif damage == "flip_weight_byte":  # still a valid safetensors file: only the hash can tell
        blob = bytearray(weights.read_bytes())
        blob[-5] ^= 0x01
        weights.write_bytes(bytes(blob))
    elif damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        weights.unlink()
    capsys.readouterr()
    assert train(tiny, out) == 2
    err = capsys.readouterr().err
    assert "checkpoint is damaged" in err and "delete" in err, err
    assert not (out / "model").exists()


def test_after_deleting_a_damaged_checkpoint_the_run_starts_over_and_matches(tiny, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    assert train(tiny, tmp_path / "ref") == 0
    out = tmp_path / "o"
    assert train(tiny, out, "train.stop_at_step=3") == 0
    (out / "checkpoint" / "state.pt").write_bytes(b"\0" * 10)
    assert train(tiny, out) == 2
    shutil.rmtree(out / "checkpoint")
    assert train(tiny, out) == 0
    a, b = load_file(str(tmp_path / "ref" / "model" / "model.safetensors")), \
        load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, 7))


def test_checkpoint_hashes_cover_every_saved_file(tiny, tmp_path):
    assert train(tiny, tmp_path / "o", "train.stop_at_step=1") == 0
    state = torch.load(tmp_path / "o" / "checkpoint" / "state.pt", weights_only=False)
    saved = {p.name for p in (tmp_path / "o" / "checkpoint" / "model").iterdir() if p.is_file()}
    assert set(state["files"]["model"]) == saved and "model.safetensors" in saved and "step.txt" in saved
