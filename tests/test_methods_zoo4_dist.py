"""2 CPU processes (torchrun, gloo) give the same KTO update as 1 process with the same global batch: the
reference point z0 is reduced over every micro-batch of every process (`loop.fit`'s prepare_step). Separate
file: the two subprocess startups dominate its time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

EXAMPLES = [{"prompt": format_prompt(f"Sort: {i % 7} {i % 5}"), "completion": c, "label": good}
            for i in range(8) for c, good in ((f"{min(i % 7, i % 5)} {max(i % 7, i % 5)}", True), (f"zz {i}", False))]

WORKER = """
import json, sys, torch
from farm.methods import kto
from farm.methods.loop import TrainConfig
from farm.models.loading import load_causal_lm

path, out, per_device, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model, tok = load_causal_lm(path, device="cpu")
tc = TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device, max_steps=2, max_grad_norm=1.0,
                 schedule="constant", warmup_ratio=0, progress=False, device="cpu")
from farm.methods.data import tokenize_pairs
from farm.methods.pairs import precompute_reference
model = model.double()
ex = tokenize_pairs(tok, kto.with_mismatched(json.load(open(data))), keys=kto.KEYS)
ex = precompute_reference(model, tok, ex, keys=kto.KEYS)
ex = [{**e, "ref": [e["ref"][0] - 0.5, e["ref"][1] - 0.5]} for e in ex]  # a reference below the policy: z0 > 0
r = kto.train(model, tok, ex, kto.Config(train=tc))
from accelerate import PartialState
if PartialState().is_main_process:
    torch.save({"world": PartialState().num_processes, "z0": [h["z0"] for h in r["history"]],
                **r["model"].state_dict()}, out)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_give_the_same_kto_update_as_one(tmp_path):
    tiny = str(build_tiny([e["prompt"] + e["completion"] for e in EXAMPLES], tmp_path / "tiny",
                          TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0))
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "data.json").write_text(json.dumps(EXAMPLES))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "worker.py"), tiny]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), *args, str(tmp_path / "two.pt"), "4",
                               str(tmp_path / "data.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, *args, str(tmp_path / "one.pt"), "8", str(tmp_path / "data.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    for p in procs:
        log = p.communicate(timeout=300)[0].decode(errors="replace")
        assert p.returncode == 0, log[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one.pop("world"), two.pop("world")) == (1, 2)
    z_one, z_two = one.pop("z0"), two.pop("z0")
    assert abs(z_one[0] - 0.5) < 1e-6 and z_one[1] > 0  # step 1: the policy is the reference + 0.5 everywhere
    assert abs(z_one[1] - z_two[1]) < 1e-9  # step 2: the same step-level reference point from 2 processes
    init = load_causal_lm(tiny, device="cpu")[0].state_dict()
    assert any(not torch.equal(one[k].float(), init[k]) for k in one)
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-9, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
