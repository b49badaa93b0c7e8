"""Noise wrappers: measured rates match the parameters, chain order, swap is undone, identities differ."""

from __future__ import annotations

import numpy as np
import pytest

from farm.annotators.noise import (
    ConstantJudge,
    chain,
    contains_list,
    flip,
    length_bias,
    list_bias,
    position_bias,
    swap,
)
from farm.types import Annotation, Annotator, Pair


class FirstWordJudge:
    """Prefers the output whose text sorts first; deterministic, position-independent (a real judge, not a mock)."""

    name = "first_word"

    def identity(self) -> str:
        return "first_word"

    def annotate(self, pairs, seed=0):
        return [Annotation(pair=p, preference=float(p.output_2 < p.output_1), annotator=self.name) for p in pairs]


def make_pairs(n: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    pairs = []
    for i in range(n):
        a, b = rng.choice(len(words), size=2, replace=False)
        pairs.append(Pair(f"instr {i}", words[a] + "x" * int(rng.integers(0, 5)), words[b], id=str(i)))
    return pairs


PAIRS = make_pairs(4000)


def prefs(judge: Annotator, pairs=PAIRS, seed: int = 0) -> np.ndarray:
    return np.array([a.preference for a in judge.annotate(pairs, seed=seed)])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5])
def test_flip_rate_is_measured_rate(rate):
    base = prefs(FirstWordJudge())
    noisy = prefs(flip(FirstWordJudge(), rate))
    measured = np.mean(base != noisy)
    se = np.sqrt(rate * (1 - rate) / len(PAIRS)) + 1e-9
    assert abs(measured - rate) < 4 * se + 1e-12


def test_flip_is_deterministic_and_batch_independent():
    j = flip(FirstWordJudge(), 0.3)
    whole = prefs(j, PAIRS[:200])
    pieces = np.concatenate([prefs(j, PAIRS[i:min(i + 7, 200)]) for i in range(0, 200, 7)])
    assert (whole == pieces).all()
    assert (prefs(j, PAIRS[:200], seed=1) != whole).any()  # another seed, other draws


def test_partial_application_equals_direct():
    assert flip(0.25)(FirstWordJudge()).identity() == flip(FirstWordJudge(), 0.25).identity()
    assert (prefs(flip(0.25)(FirstWordJudge())) == prefs(flip(FirstWordJudge(), 0.25))).all()


def test_chain_order_is_innermost_first():
    # position_bias(1.0) then flip(1.0): always first wins, then flipped → always second wins.
    j = chain(FirstWordJudge(), position_bias(1.0), flip(1.0))
    assert set(prefs(j).tolist()) == {1.0}
    j = chain(FirstWordJudge(), flip(1.0), position_bias(1.0))
    assert set(prefs(j).tolist()) == {0.0}
    assert j.identity().startswith("position_bias(strength=1.0)<flip(strength=1.0)<")


def test_position_bias_moves_p_first():
    base = 1 - prefs(FirstWordJudge()).mean()
    for s in (0.2, -0.2):
        p_first = 1 - prefs(position_bias(FirstWordJudge(), s)).mean()
        expected = base * (1 - abs(s)) + (abs(s) if s > 0 else 0.0)
        assert abs(p_first - expected) < 0.03


def test_length_bias_prefers_longer():
    pairs = [p for p in PAIRS if len(p.output_1) != len(p.output_2)]
    longer_second = np.array([len(p.output_2) > len(p.output_1) for p in pairs])
    base = prefs(FirstWordJudge(), pairs)
    p_longer_base = np.mean(base == longer_second)
    biased = prefs(length_bias(FirstWordJudge(), 0.4), pairs)
    p_longer = np.mean(biased == longer_second)
    assert abs(p_longer - (0.4 + 0.6 * p_longer_base)) < 0.03
    always_shorter = prefs(length_bias(FirstWordJudge(), -1.0), pairs)
    assert (always_shorter == ~longer_second).all()


def test_list_bias_and_contains_list():
    assert contains_list("1. a\n2. b") and not contains_list("a, b")
    pairs = [Pair("i", "1. a\n2. b", "a, b"), Pair("i", "a, b", "- a\n- b"), Pair("i", "a", "b")]
    got = prefs(list_bias(ConstantJudge(0.5), 1.0), pairs).tolist()
    assert got == [0.0, 1.0, 0.5]


def test_swap_is_undone():
    j = swap(FirstWordJudge())
    anns = j.annotate(PAIRS[:50])
    assert [a.pair for a in anns] == PAIRS[:50]
    # FirstWordJudge is position-independent, so swapping and undoing changes nothing
    assert (prefs(j, PAIRS[:50]) == prefs(FirstWordJudge(), PAIRS[:50])).all()
    # a position-biased judge, swapped, is biased the other way
    biased = position_bias(FirstWordJudge(), 1.0)
    assert set(prefs(swap(biased), PAIRS[:50]).tolist()) == {1.0}
    assert all("swap" in a.meta["noise"] for a in anns)


def test_invalid_passes_through_and_wrappers_are_annotators():
    j = chain(ConstantJudge(None), position_bias(0.5), length_bias(0.5), flip(1.0), swap())
    assert isinstance(j, Annotator)
    assert all(a.preference is None for a in j.annotate(PAIRS[:20]))


def test_identity_includes_params_and_bad_params_fail():
    assert flip(FirstWordJudge(), 0.1).identity() != flip(FirstWordJudge(), 0.2).identity()
    with pytest.raises(ValueError):
        flip(1.5)
    with pytest.raises(ValueError):
        flip(FirstWordJudge(), -0.1)
    with pytest.raises(TypeError):
        chain(FirstWordJudge(), 0.25)
