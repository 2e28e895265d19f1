import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

from kmi.attacks import ImputationBaseline
from kmi.metrics import tabular as m


def test_metrics_on_a_hand_computed_example():
    truth = np.array(["F", "F", "M", "M", "M", "M"])
    pred = np.array(["F", "M", "M", "M", "M", "F"])
    assert m.accuracy(truth, pred) == pytest.approx(4 / 6)
    # recalls: F 1/2, M 3/4
    assert m.balanced_accuracy(truth, pred) == pytest.approx((0.5 + 0.75) / 2)
    assert m.g_mean(truth, pred) == pytest.approx(np.sqrt(0.5 * 0.75))
    # F: precision 1/2, recall 1/2 -> 0.5; M: precision 3/4, recall 3/4 -> 0.75
    assert m.f1(truth, pred) == pytest.approx((0.5 + 0.75) / 2)
    tp, tn, fp, fn = 3, 1, 1, 1
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m.mcc(truth, pred) == pytest.approx(mcc)


def test_majority_guess_scores_zero_on_g_mean_and_mcc():
    truth = np.array([0] * 9 + [1])
    pred = np.zeros(10, dtype=int)
    assert m.accuracy(truth, pred) == 0.9
    assert m.g_mean(truth, pred) == 0.0
    assert m.mcc(truth, pred) == 0.0
    assert m.balanced_accuracy(truth, pred) == 0.5


def test_auc_binary_and_multiclass():
    truth = np.array(["a", "b", "b", "a"])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    assert m.auc(truth, scores, ["a", "b"]) == 1.0
    assert m.auc(truth, scores[:, ::-1], ["a", "b"]) == 0.0
    assert np.isnan(m.auc(np.array(["a", "a"]), scores[:2], ["a", "b"]))
    three = np.eye(3)[[0, 1, 2, 0]]
    assert m.auc(np.array([0, 1, 2, 0]), three, [0, 1, 2]) == 1.0


def test_attack_metrics_and_advantage():
    truth = np.array([0, 1, 1, 0])
    res = m.attack_metrics(truth, np.array([0, 1, 0, 0]), np.eye(2)[[0, 1, 0, 0]], [0, 1])
    assert set(res) == {"accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc"}
    base = m.attack_metrics(truth, np.zeros(4, dtype=int))
    adv = m.advantage(res, base)
    assert adv["accuracy"] == pytest.approx(0.25) and "auc" not in adv
    assert m.advantage(0.8, 0.75) == pytest.approx(0.05)


def test_scorers_work_with_cross_validation():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 2, 200)
    X = np.column_stack([s + rng.normal(scale=0.1, size=200), s])
    y = rng.integers(0, 2, 200)
    attack = ImputationBaseline(sensitive_feature=1, random_state=0)
    for name in ("accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc"):
        scores = cross_val_score(attack, X, y, cv=2, scoring=m.attack_scorer(name))
        assert np.all(scores > 0.9), name
    with pytest.raises(ValueError, match="Unknown metric"):
        m.get_scorer("precision")


def test_advantage_interval():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 2000)
    better = np.where(rng.random(2000) < 0.9, truth, 1 - truth)
    worse = np.where(rng.random(2000) < 0.7, truth, 1 - truth)
    low, high = m.advantage_interval(truth, better, worse)
    gain = m.balanced_accuracy(truth, better) - m.balanced_accuracy(truth, worse)
    assert 0 < low < gain < high < 0.3
    low, high = m.advantage_interval(truth, better, better)
    assert low == high == 0.0
    noisy = np.where(rng.random(2000) < 0.9, truth, 1 - truth)
    low, high = m.advantage_interval(truth, noisy, better)
    assert low < 0 < high  # two equally good attacks: no significant advantage


@pytest.mark.parametrize("name", [*m.METRICS, "interval"])
def test_empty_missing_or_all_missing_inputs_are_refused(name):
    def metric(y_true, y_pred):
        if name == "interval":
            return m.advantage_interval(y_true, y_pred, y_pred)
        return m.METRICS[name](y_true, y_pred)

    with pytest.raises(ValueError, match=r"y_true is empty.*Received: len\(y_true\)=0"):
        metric([], [])
    with pytest.raises(ValueError, match=r"Received: len\(y_true\)=2, len\(y_pred\)=1"):
        metric(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="y_true holds missing values.*Received: 1 missing of 2"):
        metric(["a", np.nan], ["a", "b"])
    with pytest.raises(ValueError, match="only missing values.*Received: 2 missing"):
        metric(["a", "b"], [None, np.nan])
    # a missing prediction among others counts as wrong
    assert m.accuracy(["a", "b"], ["a", np.float32("nan")]) == 0.5


def test_auc_and_interval_errors():
    with pytest.raises(ValueError, match=r"Received: scores.shape=\(2, 3\)"):
        m.auc(["a", "b"], np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="NaN in every row"):
        m.auc(["a", "b"], np.full((2, 2), np.nan), ["a", "b"])
    with pytest.raises(ValueError, match="y_true is empty"):
        m.auc([], np.ones((0, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="classes is empty"):
        m.paired_interval([], [], [])
    with pytest.raises(ValueError, match="Received: lengths 2, 1 and 2"):
        m.paired_interval([0, 1], [True], [True, False])
    with pytest.raises(ValueError, match="Received: n_boot=0"):
        m.paired_interval([0, 1], [True, True], [True, False], n_boot=0)
    with pytest.raises(ValueError, match="Received: level=1"):
        m.paired_interval([0, 1], [True, True], [True, False], level=1)
