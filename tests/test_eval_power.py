"""Intervals over seeds then prompts, variance components, minimum detectable differences, sample sizes."""

from __future__ import annotations

import numpy as np
import pytest

from farm.eval import power


def _world(rng, M=3, S=4, N=400, sd_prompt=0.15, sd_seed=0.05, sd_res=0.2, effects=(0.0, 0.05, -0.05)):
    """v[m, s, i] = 0.5 + effect_m + a_i + u_ms + e_msi (a shared by all methods: paired designs cancel it)."""
    a = rng.normal(0, sd_prompt, N)
    v = np.empty((M, S, N))
    for m in range(M):
        u = rng.normal(0, sd_seed, S)
        v[m] = 0.5 + effects[m] + a[None, :] + u[:, None] + rng.normal(0, sd_res, (S, N))
    return v


def test_variance_components_recover_the_simulated_ones():
    rng = np.random.default_rng(0)
    d = np.stack([_world(rng, M=1, S=40, N=2000, sd_prompt=0.3, sd_seed=0.1, sd_res=0.5)[0]])[0]
    c = power.variance_components(d)
    assert c.prompt ** 0.5 == pytest.approx(0.3, rel=0.1)
    assert c.seed ** 0.5 == pytest.approx(0.1, rel=0.3)
    assert c.residual ** 0.5 == pytest.approx(0.5, rel=0.05)


def test_hierarchical_bootstrap_se_covers_the_true_spread_of_the_paired_difference():
    # the true SD of (mean of method 1 − mean of method 0) over fresh seeds and fresh prompts, by simulation,
    # against the bootstrap SE from one data set: the bootstrap may be conservative, never much too small
    rng = np.random.default_rng(1)
    true = [np.diff(power.point_means(_world(rng)[:2]))[0] for _ in range(300)]
    v = _world(np.random.default_rng(2))
    boot = power.resampled_means(v, n_boot=2000, seed=0)
    se = (boot[:, 1] - boot[:, 0]).std()
    assert 0.9 * np.std(true) < se < 2.0 * np.std(true)
    # seeds matter: the same data with the seed effect removed has a clearly smaller interval
    flat = v - v.mean(2, keepdims=True) + v.mean((1, 2), keepdims=True)
    b2 = power.resampled_means(flat, n_boot=2000, seed=0)
    assert (b2[:, 1] - b2[:, 0]).std() < 0.8 * se


def test_resampling_is_shared_by_methods_so_a_constant_offset_has_no_spread():
    rng = np.random.default_rng(3)
    base = rng.random((1, 3, 200))
    v = np.concatenate([base, base + 0.1])
    boot = power.resampled_means(v, 500, 0)
    assert np.allclose(boot[:, 1] - boot[:, 0], 0.1)


def test_missing_verdicts_are_left_out_of_the_mean():
    v = np.array([[[1.0, 0.0, np.nan, 1.0]]])
    assert power.point_means(v)[0] == pytest.approx(2 / 3)
    assert np.isfinite(power.resampled_means(v, 50, 0)).all()


def test_interval_contains_its_estimate_even_when_every_replicate_is_below_it():
    # Spearman of a perfect ranking is 1.0; resampled correlations are ≤ 1: a plain percentile interval excludes it
    boot = np.r_[np.full(900, 0.9), np.full(100, 0.95)]
    iv = power.interval(1.0, boot)
    assert iv.low <= 1.0 <= iv.high and iv.clipped
    assert not power.interval(0.92, boot).clipped


@pytest.mark.parametrize("spread, seed_sd", [(0.04, 0.0), (0.1, 0.0), (0.1, 0.02)])
def test_rank_correlation_interval_covers_the_true_correlation(spread, seed_sd):
    # two judges whose true method win rates rank alike up to `spread`; 2 seeds with seed effects `seed_sd`,
    # 300 prompts: the interval from the run's hierarchical bootstrap must cover the true Spearman ~95% of the time
    from scipy.stats import spearmanr

    from farm.eval.report import rank_agreement

    rng = np.random.default_rng(0)
    M, S, N, R = 9, 2, 300, 100
    true_a = np.linspace(0.35, 0.65, M)
    true_b = true_a + rng.normal(0, spread, M)
    rho = spearmanr(true_a, true_b)[0]

    def stats(true, draws: int):  # the same draws for both judges, as in a run
        v = (rng.random((M, S, N)) < true[:, None, None] + rng.normal(0, seed_sd, (M, S, 1))).astype(float)
        return {"point": power.point_means(v), "boot": power.resampled_means(v, 300, draws)}

    hits = 0
    for r in range(R):
        _, lo, hi = rank_agreement(stats(true_a, r), stats(true_b, r))
        hits += lo <= rho <= hi
    assert hits / R >= 0.85


def test_required_size_is_the_smallest_n_with_enough_power():
    c = power.Components(prompt=400.0, seed=0.5, residual=900.0, n_prompts=810, n_seeds=2)
    sizes = power.required_size(c, delta=3.0, seeds=(1, 2, 5))
    assert sizes[1] > sizes[2] > sizes[5]  # more seeds, fewer prompts
    for k, n in sizes.items():
        assert power.power_of(3.0, c.se(n, k)) >= 0.8 > power.power_of(3.0, c.se(n - 1, k))
    # with seed variance τ² = 4 one or two seeds cannot detect 3 points at 80% power, whatever the prompts
    c4 = power.Components(prompt=400.0, seed=4.0, residual=900.0, n_prompts=810, n_seeds=2)
    assert power.required_size(c4, delta=3.0, seeds=(1, 2, 5))[1] is None
    assert power.required_size(c4, delta=3.0, seeds=(1, 2, 5))[2] is None


def test_minimum_detectable_difference_has_80_percent_power():
    assert power.power_of(power.minimum_detectable(1.7), 1.7) == pytest.approx(0.8, abs=1e-3)
