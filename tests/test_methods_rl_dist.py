"""PPO, GRPO and RLOO under 2 CPU processes (torchrun, gloo; farm/methods/shard.py): given the same rollout rows, the
2-process update equals the 1-process update (for GRPO's three loss normalisations, RLOO and PPO's policy and
value model, with gradient accumulation, two epochs and the batch statistics reduced over processes); and the whole training loop runs
data-parallel: each process samples its own block of each step's prompts, the union is the 1-process run's
prompts, every process ends with the same weights, and the logged reward is the mean over every process's rows.
One launch runs every case, so the two subprocess startups (which dominate) are paid once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from farm.models.generation import format_prompt
from farm.models.tiny import TinySpec, build_tiny

PROMPTS = [f"Sort: {a} {b} {c}" for a in "1234" for b in "5678" for c in "9"]

WORKER = r"""
import copy, json, sys
import numpy as np, torch
from farm.methods import grpo, maths, ppo, rloo
from farm.methods.loop import make_optimizer, rl_train_config
from farm.methods.rollout import collect_rollout, response_values, select_rows, value_model_from_policy
from farm.methods.scorers import FunctionScorer
from farm.methods.shard import current_shard
from farm.models.loading import load_causal_lm

path, out, micro, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
shard = current_shard("cpu")
K, GROUPS = 4, 4
seen = []


def digits(instruction, input, output):
    seen.append(instruction)
    return sum(ch.isdigit() for ch in output) / max(len(output), 1) + 0.1 * len(output) / 16


base, tok = load_causal_lm(path, device="cpu")
base = base.double()
records = [{"instruction": p, "input": ""} for p in prompts]
# one rollout of GROUPS x K rows, the same in every process (same model, same seed, same batch)
ro, _ = collect_rollout(base, base, tok, [records[g] for g in range(GROUPS) for _ in range(K)],
                        FunctionScorer(digits), temperature=1.0, max_new_tokens=12, max_prompt_tokens=64, seed=3)
rows = torch.arange(GROUPS * K).view(GROUPS, K)[shard.local_groups(GROUPS)].reshape(-1)
local = select_rows(ro, rows)
result = {"world": shard.world, "base": copy.deepcopy(base.state_dict())}
mean, std = shard.mean_std(local.scores.double())
result["mean_std"] = [float(mean), float(std)]


def updated(module, cfg, adv_of):
    model = copy.deepcopy(base)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.train)
    stats = module.update_on_rollout(model, opt, params, local, adv_of(local), None, cfg, np.random.default_rng(0),
                                     shard)
    return model.state_dict(), stats


tc = dict(lr=0.05, optimizer="sgd", max_grad_norm=1.0, progress=False, device="cpu")
for loss in ("grpo", "dapo", "dr_grpo"):
    cfg = grpo.Config(prompts_per_step=GROUPS, k=K, minibatch_size=GROUPS * K, micro_batch_size=micro, epochs=2,
                      loss=loss, max_new_tokens=12, kl_coef=0.1, clip=0.2, train=rl_train_config(**tc))
    result[f"grpo_{loss}"] = updated(grpo, cfg, lambda r: grpo.group_advantages(r.scores, K, "group"))
cfg = rloo.Config(prompts_per_step=GROUPS, k=K, minibatch_size=GROUPS * K, micro_batch_size=micro, epochs=2,
                  kl_coef=0.1, max_new_tokens=12, train=rl_train_config(**tc))
result["rloo"] = updated(rloo, cfg, lambda r: rloo.leave_one_out_advantages(r.scores, K))

# PPO: advantages and returns of the whole rollout (GAE, whitened over every row), then this process's rows
value = value_model_from_policy(base)
mask = ro.response_mask.double()
with torch.no_grad():
    old_values = response_values(value, ro) * mask
    rewards = -0.1 * (ro.logprobs - ro.ref_logprobs) * mask + maths.terminal_rewards(ro.scores, ro.response_mask)
    adv, ret = maths.gae(rewards, old_values, mask, 1.0, 0.95)
    adv_local = shard.masked_whiten(adv[rows], mask[rows])
result["whiten"] = (adv_local, maths.masked_whiten(adv, mask)[rows])
model, vm = copy.deepcopy(base), copy.deepcopy(value)
pp, vp = [p for p in model.parameters()], [p for p in vm.parameters()]
cfg = ppo.Config(rollout_batch_size=GROUPS * K, minibatch_size=GROUPS * K, micro_batch_size=micro, epochs=2,
                 max_new_tokens=12, train=rl_train_config(**tc))
stats = ppo.update_on_rollout(model, vm, make_optimizer(pp, cfg.train), make_optimizer(vp, cfg.train), pp, vp,
                              local, maths.masked_whiten(adv, mask)[rows], ret[rows], old_values[rows], cfg,
                              np.random.default_rng(0), shard)
result["ppo"] = ({**{"policy." + k: v for k, v in model.state_dict().items()},
                  **{"value." + k: v for k, v in vm.state_dict().items()}}, {"loss": stats["policy_loss"]})

# the whole loop, on-policy (one optimiser step per rollout): data-parallel sampling
for name, module, cfg in (
        ("loop_grpo", grpo, grpo.Config(steps=2, prompts_per_step=GROUPS, k=K, minibatch_size=GROUPS * K,
                                        micro_batch_size=GROUPS * K // shard.world, max_new_tokens=12,
                                        train=rl_train_config(lr=1e-3, progress=False, device="cpu"))),
        ("loop_rloo", rloo, rloo.Config(steps=2, prompts_per_step=GROUPS, k=K, minibatch_size=GROUPS * K,
                                        micro_batch_size=GROUPS * K // shard.world, max_new_tokens=12,
                                        normalize_advantages=True,
                                        train=rl_train_config(lr=1e-3, progress=False, device="cpu"))),
        ("loop_ppo", ppo, ppo.Config(steps=2, rollout_batch_size=GROUPS * K, minibatch_size=GROUPS * K // 2,
                                     micro_batch_size=4, epochs=2, max_new_tokens=12, adaptive_kl=True,
                                     train=rl_train_config(lr=1e-3, progress=False, device="cpu")))):
    model = copy.deepcopy(base)
    seen.clear()
    hist = module.train(model, tok, records, FunctionScorer(digits), cfg)
    result[name] = {"state": model.state_dict(), "seen": list(seen), "reward": [h["reward"] for h in hist]}
torch.save(result, out.replace(".pt", f".{shard.rank}.pt"))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl_dist")
    tiny = str(build_tiny([format_prompt(p) + " 1 2 3" for p in PROMPTS], d / "tiny",
                          TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0))
    (d / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(d / "worker.py"), tiny]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), *args, str(d / "two.pt"), "2",
                               json.dumps(PROMPTS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, *args, str(d / "one.pt"), "16", json.dumps(PROMPTS)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]  # concurrently: startup dominates
    for p in procs:
        log = p.communicate(timeout=600)[0].decode(errors="replace")
        assert p.returncode == 0, log[-3000:]
    return (torch.load(d / "one.0.pt", weights_only=False), torch.load(d / "two.0.pt", weights_only=False),
            torch.load(d / "two.1.pt", weights_only=False))


@pytest.mark.parametrize("case", ["grpo_grpo", "grpo_dapo", "grpo_dr_grpo", "rloo", "ppo"])
def test_two_processes_take_the_one_process_update_on_the_same_rows(launched, case):
    one, two0, two1 = launched
    assert (one["world"], two0["world"], two1["world"]) == (1, 2, 2)
    (a, sa), (b, sb), (c, _) = one[case], two0[case], two1[case]
    moved = [k for k in a if k in one["base"] and not torch.equal(a[k], one["base"][k])
             or k.startswith("policy.") and not torch.equal(a[k], one["base"][k[7:]])]
    assert moved, "the update moved nothing"
    for k in a:  # 1 process, micro-batch 16 == 2 processes × 8 rows, micro-batch 2 (accumulated), both ranks
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=lambda m, k=k: f"{case} {k}: {m}")
        assert torch.equal(b[k], c[k]), f"{case} {k}: the two processes' weights differ"
    assert sb["loss"] == pytest.approx(sa["loss"], abs=1e-6)  # the logged loss is the whole batch's


def test_batch_statistics_are_reduced_over_processes(launched):
    one, two0, two1 = launched
    assert two0["mean_std"] == pytest.approx(one["mean_std"], abs=1e-12)
    assert two1["mean_std"] == two0["mean_std"]
    for r in launched:  # advantages whitened over every process's tokens = whitened over the whole rollout
        torch.testing.assert_close(r["whiten"][0], r["whiten"][1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("loop", ["loop_grpo", "loop_rloo", "loop_ppo"])
def test_the_loop_shards_each_steps_prompts_and_keeps_the_weights_equal(launched, loop):
    one, two0, two1 = launched
    r1, r2 = two0[loop], two1[loop]
    for k in r1["state"]:
        assert torch.equal(r1["state"][k], r2["state"][k]), f"{loop} {k}: the processes drifted apart"
    per = len(one[loop]["seen"]) // 2  # rows scored per step: 4 groups × k = 4 in one process, half in each of two
    assert len(r1["seen"]) == len(r2["seen"]) == per
    for step in range(2):
        a, b = (r[step * per // 2:(step + 1) * per // 2] for r in (r1["seen"], r2["seen"]))
        assert set(a).isdisjoint(b)  # each process sampled its own block of the step's prompts ...
        assert sorted(a + b) == sorted(one[loop]["seen"][step * per:(step + 1) * per])  # ... together the 1-process run's
    assert r1["reward"] == r2["reward"]  # the logged reward is the mean over every process's rows
