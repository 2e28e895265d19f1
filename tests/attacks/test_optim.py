"""minimize: chunks of steps inside one compiled loop, cached programs (both backends)."""

import logging

import keras
import numpy as np
import pytest
from keras import ops

from kmi.attacks import MIFace, _optim
from kmi.attacks._optim import minimize
from kmi.models import softmax_regression
from kmi.targets import Target

CENTRES = np.array([[1.0, -2.0, 0.5], [3.0, 0.5, -1.0], [0.0, 0.0, 0.0]], "float32")


def _quadratic(x, aux):
    return ops.sum((x - aux["centre"] - 0.1 * aux["noise"]) ** 2, axis=1)


def _noise(step, rng):
    return {"noise": rng.standard_normal((3, 3))}


def _run(**kwargs):
    options = dict(
        data={"centre": CENTRES},
        aux_fn=_noise,
        rng=0,
        max_iter=130,
        learning_rate=0.05,
        optimizer="adam",
        patience=15,
        tol=1e-3,
    )
    return minimize(_quadratic, np.zeros((3, 3)), **{**options, **kwargs})


def test_chunks_equal_the_step_by_step_loop():
    stepwise, chunked = _run(chunk_size=1), _run(chunk_size=50)
    np.testing.assert_allclose(chunked.x, stepwise.x, atol=1e-5)
    np.testing.assert_allclose(chunked.loss, stepwise.loss, atol=1e-5)
    assert chunked.n_iter == stepwise.n_iter
    np.testing.assert_array_equal(chunked.n_iter_rows, stepwise.n_iter_rows)


def test_each_row_stops_at_its_own_step():
    # SGD on (x - c)^2 with rate 0.1 shrinks the error by 0.8 a step; the loss is
    # read before the step, so a row stops at the first t with (0.8^(t-1) |c|)^2 <= gamma
    centres = np.array([[1.0], [10.0]], "float32")
    result = minimize(
        lambda x, aux: ops.sum((x - aux["c"]) ** 2, axis=1),
        np.zeros((2, 1)),
        data={"c": centres},
        learning_rate=0.1,
        gamma=1e-2,
        max_iter=500,
    )
    expected = [
        next(t for t in range(1, 500) if (0.8 ** (t - 1) * c) ** 2 <= 1e-2) for c in (1, 10)
    ]
    assert result.n_iter_rows.tolist() == expected  # exact, not rounded to a check interval
    assert result.n_iter == max(expected)  # the loop ends when every row has stopped


def test_interruption_returns_the_last_finished_chunk(monkeypatch):
    programs = _optim._programs

    def interrupting(*args):
        chunk, final = programs(*args)
        calls = []

        def chunk_then_interrupt(*a):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return chunk(*a)

        return chunk_then_interrupt, final

    monkeypatch.setattr(_optim, "_programs", interrupting)
    with pytest.warns(RuntimeWarning, match="Interrupted after 100 of 130 steps"):
        interrupted = _run(patience=None)
    assert interrupted.interrupted and interrupted.n_iter == 100
    monkeypatch.undo()
    whole = _run(patience=None, max_iter=100)
    np.testing.assert_allclose(interrupted.x, whole.x, atol=1e-6)


def test_the_progress_bar_counts_the_steps(capsys):
    _run(patience=None, verbose=1, desc="quadratic")
    assert "130/130" in capsys.readouterr().out
    _run(patience=None, gamma=100.0, verbose=1)  # every row stops after its first step
    out = capsys.readouterr().out
    assert "1/130" in out and "130/130" not in out


def test_bad_chunk_size_and_clashing_keys_are_refused():
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        _run(chunk_size=0)
    with pytest.raises(ValueError, match="aux_fn and data share keys"):
        _run(aux_fn=lambda step, rng: {"centre": np.zeros((3, 3))})


@pytest.fixture
def tiny_target():
    model = softmax_regression((4, 4, 1), 5)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((40, 4, 4, 1)), rng.integers(0, 5, 40), epochs=2, verbose=0)
    return model


def test_repeated_invert_calls_reuse_one_compiled_program(tiny_target, caplog):
    attack = MIFace(tiny_target, max_iter=60, optimizer="adam").fit()
    attack.invert([0, 1])
    traced = dict(_optim._TRACES)
    with caplog.at_level(logging.WARNING):
        for labels in ([2, 3], [4, 0], [1, 1]):  # other classes, the same shapes
            attack.invert(labels)
        MIFace(Target(tiny_target), max_iter=60, optimizer="adam").fit().invert([3, 4])
        attack.set_params(learning_rate=0.5).invert([0, 2])  # hyperparameters are arguments
    assert _optim._TRACES == traced
    assert "retracing" not in caplog.text


def test_a_cached_program_sees_the_current_weights(tiny_target):
    attack = MIFace(tiny_target, max_iter=30).fit()
    attack.invert([0, 1])  # compiles and caches the program
    tiny_target.set_weights([w * -1.0 for w in tiny_target.get_weights()])  # "retrained"
    cached = attack.invert([0, 1])
    _optim._CACHE.clear()
    fresh = attack.invert([0, 1])
    np.testing.assert_allclose(cached, fresh, atol=1e-6)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_optim, "_CACHE_SIZE", 2)
    for i in range(4):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        minimize(
            lambda x, aux, m=model: ops.sum(m(x) ** 2, axis=1),
            np.ones((1, 2)),
            models=[model],
            program=("test", i),
            max_iter=2,
        )
    assert len(_optim._CACHE) == 2
