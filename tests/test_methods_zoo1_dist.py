"""2 CPU processes (torchrun, gloo) give the same update as 1 process with the same global batch, for every
method trained through the shared loop (`common.fit`): SFT, the reward model and DPO (issues #12, #20). One
launch runs all three methods, so the two subprocess startups (which dominate) are paid once.

PPO, RLOO and GRPO shard their rollouts through farm/methods/shard.py: tests/test_methods_rl_dist.py. Safe PPO does
not (under `accelerate launch` every process repeats its whole run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm, load_scalar_model
from farm.models.tiny import TinySpec, build_tiny

RECORDS = [{"instruction": f"Sort: {a} {b} {c}", "input": "", "output": " ".join(sorted([a, b, c]))}
           for a in "1234" for b in "5678" for c in "9ab"]


# ----- 2 processes (gloo) == 1 process for the same global batch -----

WORKER = """
import json, sys, torch
from accelerate import Accelerator
from farm.methods import dpo
from farm.methods.reward import train_reward_model
from farm.methods.loop import TrainConfig, train_sft
from farm.models.loading import load_causal_lm, load_scalar_model

path, out, per_device, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
acc = Accelerator(cpu=True)  # under torchrun: gloo process group
records = json.load(open(data))


def tc(**kw):
    return TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device, max_steps=2, max_grad_norm=1.0,
                       schedule="constant", warmup_ratio=0, progress=False, **kw)


states = {"world": acc.num_processes}
model, tok = load_causal_lm(path, device="cpu")
states["sft"] = train_sft(model.double(), tok, records, tc(), accelerator=acc)["model"].state_dict()
rm, rtok = load_scalar_model(path, device="cpu")
triples = [{**r, "chosen": r["output"], "rejected": r["output"][::-1] + " no", "p_chosen": 1.0} for r in records]
states["reward"] = train_reward_model(rm.double(), rtok, triples, tc(), accelerator=acc)["model"].state_dict()
model, tok = load_causal_lm(path, device="cpu")
pairs = [{"prompt": "Sort: " + t["instruction"], "chosen": t["chosen"], "rejected": t["rejected"]} for t in triples]
cfg = dpo.Config(beta=0.5, train=TrainConfig(lr=0.05, optimizer="sgd", per_device_batch_size=per_device // 2,
                                             max_steps=2, max_grad_norm=1.0, schedule="constant", warmup_ratio=0,
                                             progress=False))
states["dpo"] = dpo.train(model.double(), tok, pairs, cfg)["model"].state_dict()
if acc.is_main_process:
    torch.save(states, out)
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
    init = {"sft": load_causal_lm(tiny, device="cpu")[0].state_dict()}
    init["dpo"] = init["sft"]
    init["reward"] = load_scalar_model(tiny, device="cpu")[0].state_dict()
    for method in ("sft", "reward", "dpo"):
        a, b = one[method], two[method]
        assert any(not torch.equal(a[k].float(), init[method][k].float()) for k in a), method  # the steps moved it
        tol = 1e-9 if method != "dpo" else 1e-6  # DPO's log-probs are fp32 whatever the weights
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0, msg=lambda m, k=k, t=method: f"{t} {k}: {m}")
