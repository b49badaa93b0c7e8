"""Long work is visible off a terminal (status lines with step, rate, ETA) and an interrupted SFT resumes."""

from __future__ import annotations

import logging

import pytest
import torch

from farm.progress import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_status_lines_about_every_interval_with_rate_and_eta(capsys, caplog):
    clock = Clock()
    bar = Progress(total=100, desc="sft", every=10.0, tty=False, clock=clock)
    with caplog.at_level(logging.INFO, logger="farm"):
        for _ in range(100):
            clock.t += 0.5  # 2 steps per second
            bar.update(loss="0.5")
    lines = capsys.readouterr().err.strip().splitlines()
    # every 10 s of 50 s, plus the last step: 5 lines, the same on the `farm` logger (a run writes it to run.log)
    assert len(lines) == 5 and [r.message for r in caplog.records if r.name == "farm"] == lines
    assert lines[0].startswith("sft: step 20/100 (20%) 2.00 steps/s, 10s elapsed, ETA 40s loss 0.5")
    assert lines[-1].startswith("sft: step 100/100 (100%)") and "ETA 0s" in lines[-1]


def test_no_lines_when_progress_is_off(capsys):
    bar = Progress(total=10, desc="x", enabled=False, tty=False, every=0.0)
    for _ in range(10):
        bar.update()
    assert capsys.readouterr().err == ""


def test_an_interrupted_sft_resumes_from_its_last_timed_checkpoint(tmp_path):
    # save_every_seconds (compare's SFT checkpoints) keeps the work of an interrupted run: the re-run continues from
    # the checkpoint and ends with exactly the weights of an uninterrupted run
    from farm.methods.data import pad_sft, sft_rows
    from farm.methods.loop import TrainConfig, fit, load_checkpoint, response_logits
    from farm.models.loading import load_causal_lm
    from farm.models.tiny import TinySpec, build_tiny

    recs = [{"instruction": f"say {w}", "input": "", "output": f"{w} {w}"} for w in "abcdefgh" * 4]
    path = build_tiny([r["instruction"] + " " + r["output"] for r in recs], tmp_path / "tiny",
                      TinySpec(n_layers=1, hidden=16, heads=2, intermediate=32, vocab_size=200), seed=0)

    def run(out, stop_at: int | None):
        model, tok = load_causal_lm(str(path), device="cpu")
        rows = sft_rows(tok, recs, 32)
        calls = {"n": 0}

        def loss_fn(m, b):
            calls["n"] += 1
            if stop_at is not None and calls["n"] == stop_at:
                raise KeyboardInterrupt
            logits, targets = response_logits(m, b)
            return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), {}

        tc = TrainConfig(lr=0.05, optimizer="sgd", per_device_batch_size=4, max_steps=8, save_every_seconds=1e-9,
                         progress=False, schedule="constant", warmup_ratio=0.0)
        make_batch = lambda rs: (lambda b: (b, float((b["labels"][:, 1:] != -100).sum())))(pad_sft(rs, tok.pad_token_id))  # noqa: E731
        return fit(model, tok, rows, make_batch, loss_fn, tc, out_dir=out), calls

    ref, _ = run(None, None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", stop_at=6)
    state = load_checkpoint(tmp_path / "run" / "checkpoint", ("model",))
    assert state is not None and state["step"] == 5  # every finished step was saved
    resumed, calls = run(tmp_path / "run", None)
    assert calls["n"] == 3  # only the 3 remaining steps ran
    for a, b in zip(ref["model"].parameters(), resumed["model"].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
