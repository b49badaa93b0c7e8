"""2 CPU processes (torchrun, gloo) give the same SFT update as 1 process with the same global batch
(issue #12). Separate file: the two subprocess startups dominate its ~30-40 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

RECORDS = [{"instruction": f"Sort: {a} {b} {c}", "input": "", "output": " ".join(sorted([a, b, c]))}
           for a in "1234" for b in "5678" for c in "9ab"]


# ----- 2 processes (gloo) == 1 process for the same global batch -----

WORKER = """
import json, sys, torch
from accelerate import Accelerator
from farm.methods.loop import TrainConfig, train_sft
from farm.models.loading import load_causal_lm

path, out, per_device, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
acc = Accelerator(cpu=True)  # under torchrun: gloo process group
model, tok = load_causal_lm(path, device="cpu")
tc = TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device, max_steps=2, max_grad_norm=1.0,
                 schedule="constant", warmup_ratio=0, progress=False)
r = train_sft(model.double(), tok, json.load(open(data)), tc, accelerator=acc)
if acc.is_main_process:
    torch.save({"world": acc.num_processes, **r["model"].state_dict()}, out)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_give_the_same_update_as_one(tmp_path):
    tiny = str(build_tiny([format_prompt(r["instruction"]) + r["output"] for r in RECORDS], tmp_path / "tiny",
                          TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0))
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "data.json").write_text(json.dumps(RECORDS[:16]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "worker.py"), tiny]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), *args, str(tmp_path / "two.pt"), "4",
                               str(tmp_path / "data.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, *args, str(tmp_path / "one.pt"), "8", str(tmp_path / "data.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]  # concurrently: startup dominates
    for p in procs:
        log = p.communicate(timeout=300)[0].decode(errors="replace")
        assert p.returncode == 0, log[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one.pop("world"), two.pop("world")) == (1, 2)
    init = load_causal_lm(tiny, device="cpu")[0].state_dict()
    assert any(not torch.equal(one[k].float(), init[k]) for k in one)  # two SGD steps moved the weights
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-9, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
