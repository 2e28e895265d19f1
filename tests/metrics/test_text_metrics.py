"""Text attack metrics against hand-computed values and closed forms."""

import math

import numpy as np
import pytest
from scipy import stats

from kmi.metrics.text import (
    bleu,
    cosine_similarity,
    exact_match,
    exposure,
    sequence_log_perplexity,
    text_attack_metrics,
    tokenize_words,
    word_f1,
    word_precision,
    word_recall,
)


def test_words_and_prf():
    assert tokenize_words("Hello, World! 123-45") == ["hello", "world", "123", "45"]
    y_true = ["the cat sat", "a dog"]
    y_pred = ["the cat ran away", None]
    assert word_precision(y_true, y_pred) == pytest.approx((2 / 4 + 0) / 2)
    assert word_recall(y_true, y_pred) == pytest.approx((2 / 3 + 0) / 2)
    f1 = 2 * (0.5 * 2 / 3) / (0.5 + 2 / 3)
    assert word_f1(y_true, y_pred) == pytest.approx(f1 / 2)
    assert word_f1(["b a"], ["a b"]) == 1.0
    assert exact_match(["Hello, world!", "a b"], ["hello world", "b a"]) == 0.5


def test_bleu_hand_computed():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert bleu(["a b c d"], [""]) == 0.0
    # unsmoothed: hypothesis "a b x d" against "a b c d": p1=3/4, p2=1/3, p3=0 -> 0
    assert bleu(["a b c d"], ["a b x d"], smooth=False) == 0.0
    p = [3 / 4, 2 / 4, 1 / 3, 1 / 2]  # smoothed (m+1)/(n+1) above order 1
    expected = math.exp(np.mean(np.log(p)))
    assert bleu(["a b c d"], ["a b x d"]) == pytest.approx(expected)
    # brevity penalty: a short exact prefix
    assert bleu(["a b c d"], ["a b"], max_order=1) == pytest.approx(math.exp(1 - 4 / 2))


def test_metric_errors():
    with pytest.raises(ValueError, match="Received: len"):
        word_f1(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="Received"):
        word_f1("abc", "abc")
    with pytest.raises(ValueError, match="Received: len"):
        bleu([], [])
    with pytest.raises(ValueError, match="Received: a.shape"):
        cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="Received: method"):
        exposure(0.0, [1.0], method="nope")
    with pytest.raises(ValueError, match="randomness_space"):
        exposure(0.0, [1.0, 2.0], randomness_space=2)
    with pytest.raises(ValueError, match="Received: token_ids between"):
        sequence_log_perplexity(np.full((1, 2, 2), 0.5), [[0, 5]])


def test_cosine_and_summary():
    out = cosine_similarity([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [[2, 0], [-1, -1], [1, 1]])
    np.testing.assert_allclose(out, [1.0, -1.0, 0.0])
    summary = text_attack_metrics(["a b"], ["a b"])
    assert summary == {
        "word_precision": 1.0,
        "word_recall": 1.0,
        "word_f1": 1.0,
        "bleu": 1.0,
        "exact_match": 1.0,
    }


def test_sequence_log_perplexity_closed_form():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(2, 4))
    ids = np.array([[0, 1, 2, 3], [4, 4, 0, 1]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=bool)
    out = sequence_log_perplexity(probs, ids, mask=mask)
    first = -(np.log(probs[0, 1, 2]) + np.log(probs[0, 2, 3])) / 2
    second = -np.mean([np.log(probs[1, t, ids[1, t + 1]]) for t in range(3)])
    np.testing.assert_allclose(out, [first, second])


def test_exposure_rank_is_closed_form():
    # a toy space of 16 candidates with distinct log-perplexities 0..15
    space = np.arange(16.0)
    for rank in (1, 2, 5, 16):
        canary = space[rank - 1]
        others = np.delete(space, rank - 1)
        assert exposure(canary, others) == pytest.approx(4.0 - math.log2(rank))
    # several canaries at once
    np.testing.assert_allclose(exposure([-1.0, 100.0], space[1:]), [4.0, 4.0 - math.log2(16)])


def test_exposure_sampled_rank_scales_to_space():
    ref = np.linspace(0.0, 1.0, 1000, endpoint=False)  # uniform sample of R's scores
    size = 2**20
    # the canary beats all but 10% of the sample: rank ~ 1 + 0.1 (|R| - 1)
    out = exposure(0.1, ref, randomness_space=size)
    assert out == pytest.approx(20 - math.log2(1 + 0.1 * (size - 1)))
    assert exposure(-1.0, ref, randomness_space=size) == pytest.approx(20.0)


def test_exposure_skew_normal_matches_normal_tail():
    # references at the quantiles of N(5, 2): the fit recovers it, exposure is -log2 Phi
    ref = stats.norm.ppf(np.linspace(0.0005, 0.9995, 2000), loc=5.0, scale=2.0)
    for z in (-1.0, -3.0, -5.0):
        expected = -stats.norm.logcdf(z) / math.log(2)
        out = exposure(5.0 + 2.0 * z, ref, method="skew-normal")
        assert out == pytest.approx(expected, rel=0.05)
    # capped at log2 |R|
    assert exposure(-100.0, ref, method="skew-normal", randomness_space=2**12) == 12.0


@pytest.mark.parametrize(
    "metric",
    [word_precision, word_recall, word_f1, exact_match, bleu, text_attack_metrics],
    ids=lambda f: f.__name__,
)
def test_empty_blank_or_all_none_texts_are_refused(metric):
    with pytest.raises(ValueError, match=r"y_true is empty.*Received: len\(y_true\)=0"):
        metric([], [])
    with pytest.raises(ValueError, match="y_pred holds only None.*Received: 2 None"):
        metric(["a b", "c"], [None, None])
    with pytest.raises(ValueError, match="empty or blank"):
        metric(["a", " "], ["a", "b"])
    with pytest.raises(TypeError, match="y_pred.*not one string"):
        metric(["a"], "a")
    with pytest.raises(TypeError, match=r"y_true\[1\] of type int"):
        metric(["a", 3], ["a", "b"])


def test_numeric_inputs_empty_or_nan_are_refused():
    with pytest.raises(ValueError, match="a contains only NaN"):
        cosine_similarity(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Received: b shape=\(0, 2\)"):
        cosine_similarity(np.ones((1, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match="probs contains only NaN"):
        sequence_log_perplexity(np.full((1, 2, 2), np.nan), [[0, 1]])
    with pytest.raises(ValueError, match="non-empty array"):
        sequence_log_perplexity(np.ones((0, 2, 2)), np.ones((0, 2), int))
    with pytest.raises(ValueError, match=r"canary_scores is empty"):
        exposure([], [1.0, 2.0])
    with pytest.raises(ValueError, match="reference_scores is empty"):
        exposure(0.0, [])
    with pytest.raises(ValueError, match="must be finite"):
        exposure(np.nan, [1.0, 2.0])
