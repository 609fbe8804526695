"""Next-token sampling: greedy, temperature, top-k, top-p against hand-computed distributions."""
import numpy as np
import pytest

from pygpt.sampling import sample_next

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))


def _freqs(n=20000, **kw):
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_next(np.repeat(LOGITS, 1000, axis=0), rng, **kw) for _ in range(n // 1000)])
    return np.bincount(draws, minlength=4) / len(draws)


def test_greedy_and_top_k_1_are_argmax():
    z = np.array([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sample_next(z, rng, temperature=0), [1, 0])
    np.testing.assert_array_equal(sample_next(z, rng, top_k=1), [1, 0])


def test_plain_sampling_matches_softmax():
    np.testing.assert_allclose(_freqs(), [0.5, 0.3, 0.15, 0.05], atol=0.012)


def test_top_k_renormalises_the_k_largest():
    np.testing.assert_allclose(_freqs(top_k=2), [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.012)


def test_top_p_keeps_the_smallest_nucleus():
    # mass before token 3 in sorted order is 0.95 >= 0.9, so only tokens 0..2 remain
    np.testing.assert_allclose(_freqs(top_p=0.9), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.012)
    np.testing.assert_allclose(_freqs(top_p=0.4), [1, 0, 0, 0], atol=1e-12)


def test_temperature_sharpens():
    # temperature 0.5 squares the probabilities before renormalising
    p = np.array([0.5, 0.3, 0.15, 0.05]) ** 2
    np.testing.assert_allclose(_freqs(temperature=0.5), p / p.sum(), atol=0.012)


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample_next(LOGITS, rng, temperature=-1)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        sample_next(LOGITS, rng, top_k=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        sample_next(LOGITS, rng, top_p=1.5)
    with pytest.raises(ValueError, match="logits must be"):
        sample_next(LOGITS[0], rng)
