"""Shared tensor maths against numbers worked out by hand."""

import math

import pytest
import torch

from farm.methods import maths


def test_logprobs_from_logits_hand_values():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = [1/4, 3/4]
    assert maths.logprobs_from_logits(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    # temperature 2: logits/2 = [0, log √3] → p = [1/(1+√3), √3/(1+√3)]
    want = math.log(math.sqrt(3) / (1 + math.sqrt(3)))
    assert maths.logprobs_from_logits(logits, torch.tensor([[1]]), 2.0).item() == pytest.approx(want)


def test_masked_stats_hand_values():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]]).float()
    assert maths.masked_mean(x, m).item() == pytest.approx(2.0)
    assert maths.masked_var(x, m).item() == pytest.approx(1.0)  # (1+0+1)/(3-1)
    assert maths.masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    w = maths.masked_whiten(x, m)
    assert w[0, 0].item() == pytest.approx(-1.0, abs=1e-4) and w[1, 0].item() == pytest.approx(1.0, abs=1e-4)
    assert w[0, 2].item() == 0.0
    assert maths.masked_mean(x, m, dim=1).tolist() == pytest.approx([1.5, 3.0])


def test_terminal_reward_on_last_real_token():
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    r = maths.terminal_rewards(torch.tensor([2.0, -1.0]), m)
    assert r.tolist() == [[0, 0, 2, 0], [-1, 0, 0, 0]]


def test_kl_estimators_hand_values():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert maths.kl_estimate(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert maths.kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert maths.kl_estimate(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))  # r=1/2: (r-1)-log r
    # exact KL of two categoricals = E_p[k1] = E_p[k3]
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = (p * (p / q).log()).sum()
    for kind in ("k1", "k3"):
        est = (p * maths.kl_estimate(p.log(), q.log(), kind)).sum()
        assert est.item() == pytest.approx(exact.item(), rel=1e-5)


def test_gae_hand_values_and_loop_equals_vectorised():
    # one episode of 2 tokens, γ=1, λ=0.5: V=[1,2], r=[0,3]
    # δ1 = 3 + 0 - 2 = 1; δ0 = 0 + 2 - 1 = 1; A1 = 1; A0 = 1 + 0.5·1 = 1.5
    r, v, m = torch.tensor([[0.0, 3.0, 9.0]]), torch.tensor([[1.0, 2.0, 7.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = maths.gae_loop(r, v, m, gamma=1.0, lam=0.5)
    assert adv.tolist() == [[1.5, 1.0, 0.0]] and ret.tolist() == [[2.5, 3.0, 0.0]]
    g = torch.Generator().manual_seed(0)
    R, V = torch.randn(5, 9, generator=g), torch.randn(5, 9, generator=g)
    lengths = torch.tensor([9, 1, 4, 7, 2])
    M = (torch.arange(9)[None] < lengths[:, None]).float()
    for gamma, lam in [(1.0, 0.95), (0.9, 0.7)]:
        a1, r1 = maths.gae_loop(R, V, M, gamma, lam)
        a2, r2 = maths.gae(R, V, M, gamma, lam)
        torch.testing.assert_close(a1, a2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r1, r2, atol=1e-5, rtol=1e-5)


def test_clipped_losses_hand_values():
    lp_old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]])
    m = torch.ones(1, 2)
    loss, stats = maths.clipped_policy_loss(lp, lp_old, adv, m, clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(-0.5, -0.8) = -0.5 → mean -0.85
    assert loss.item() == pytest.approx(-0.85) and stats["clipfrac"] == pytest.approx(0.5)
    v, v_old, ret = torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]])
    # unclipped (2-3)² = 1; clipped V = 1.2 → (1.2-3)² = 3.24; ½ max = 1.62
    assert maths.clipped_value_loss(v, v_old, ret, torch.ones(1, 1), 0.2).item() == pytest.approx(1.62)


def test_last_token_index():
    assert maths.last_token_index(torch.tensor([[1, 0, 0], [1, 1, 1]])).tolist() == [0, 2]
