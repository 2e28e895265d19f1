"""Image model-inversion attacks on tiny 8x8-digits targets (both backends)."""

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from kmi.attacks import (
    BREPMI,
    GMI,
    KEDMI,
    LOKT,
    PLGMI,
    RLBMI,
    DeepInversion,
    InversionModel,
    MIFace,
)
from kmi.attacks.image._gan_prior import train_gan, wgan_gp_losses
from kmi.datasets import load_digits
from kmi.metrics.image import attack_accuracy
from kmi.models import (
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    evaluation_classifier,
    pca_prior,
    softmax_regression,
)
from kmi.targets import AccessError, Target

CHANCE = 0.1


def _train(model, X, y, epochs, from_logits=True):
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    n = len(X) // 64 * 64  # whole batches: on JAX a partial last one compiles the step again
    model.fit(X[:n], y[:n], epochs=epochs, batch_size=64, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def softmax_target(digits):
    keras.utils.set_random_seed(1)
    X, y = digits
    return _train(softmax_regression((8, 8, 1), 10), X[::2], y[::2], 30, from_logits=False)


@pytest.fixture(scope="module")
def cnn_target(digits):
    keras.utils.set_random_seed(2)
    X, y = digits
    model = cnn_classifier((8, 8, 1), 10, filters=(16, 32), dense_units=64)
    return _train(model, X[::2], y[::2], 25)


@pytest.fixture(scope="module")
def eval_model(digits):
    keras.utils.set_random_seed(3)
    X, y = digits
    model = evaluation_classifier((8, 8, 1), 10, width=8, augment=False, seed=3)
    return _train(model, X, y, 25)


def test_eval_model_is_accurate(digits, eval_model):
    X, y = digits
    scores = keras.ops.convert_to_numpy(eval_model(X[1::2], training=False))
    assert (scores.argmax(1) == y[1::2]).mean() > 0.8


# ----------------------------------------------------------------------------- MIFace
def test_miface_end_to_end_beats_chance(digits, softmax_target, eval_model):
    X, y = digits
    attack = MIFace(softmax_target, max_iter=200, learning_rate=1.0, contrast="stretch")
    images = attack.fit(X).invert(np.arange(10))
    assert images.shape == (10, 8, 8, 1) and 0 <= images.min() and images.max() <= 1
    assert attack.loss_.max() < 0.05
    acc = attack_accuracy(eval_model, images, np.arange(10), top_k=1)
    assert acc > 2 * CHANCE
    attack.set_params(eval_model=eval_model)
    assert attack.score(X, y) == acc


def test_miface_stopping_rule_and_keep_best(softmax_target):
    attack = MIFace(softmax_target, max_iter=500, learning_rate=1.0, gamma=0.5).fit()
    attack.invert([0, 1])
    assert attack.n_iter_ < 500 and (attack.loss_ <= 0.5).all()
    attack = MIFace(softmax_target, max_iter=300, learning_rate=1e-9, patience=5).fit()
    attack.invert([3])
    assert attack.n_iter_ < 300


def test_miface_processing_hook_and_inits(digits, softmax_target):
    X, _ = digits
    calls = []

    def process(images):
        calls.append(images.shape)
        return images

    attack = MIFace(softmax_target, max_iter=20, process=process, process_every=5, init="mean")
    attack.fit(X).invert([1, 2])
    assert calls == [(2, 8, 8, 1)] * 4
    a = MIFace(softmax_target, max_iter=5, init="random", random_state=0).fit().invert([4])
    b = MIFace(softmax_target, max_iter=5, init="random", random_state=0).fit().invert([4])
    np.testing.assert_array_equal(a, b)
    start = np.full((8, 8, 1), 0.5, "float32")
    out = MIFace(softmax_target, max_iter=0, init=start).fit().invert([0])
    np.testing.assert_array_equal(out[0], start)


def test_miface_errors(digits, softmax_target):
    X, _ = digits
    with pytest.raises(AccessError):
        MIFace(Target(softmax_target, access="black-box")).fit()
    with pytest.raises(NotFittedError):
        MIFace(softmax_target).invert([0])
    attack = MIFace(softmax_target, max_iter=2).fit()
    with pytest.raises(ValueError, match="Received: y values"):
        attack.invert([10])
    with pytest.raises(ValueError, match="Received: y.shape"):
        attack.invert([[0]])
    with pytest.raises(ValueError, match="Received: X.shape"):
        attack.fit(X[:, :4])
    bad = X[:3].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack.fit(bad)
    for params in (
        {"max_iter": -1},
        {"learning_rate": 0},
        {"optimizer": "rmsprop"},
        {"init": "mean"},
        {"contrast": "x"},
        {"patience": 0},
    ):
        with pytest.raises(ValueError, match="Received"):
            MIFace(softmax_target, **params).fit()


def test_miface_estimator_contract(softmax_target):
    target = Target(softmax_target)
    attack = MIFace(target, max_iter=3)
    assert attack.fit() is attack
    cloned = clone(attack)
    assert cloned.target is target and cloned.get_params()["max_iter"] == 3
    cloned.set_params(max_iter=4, optimizer="adam")
    assert cloned.fit().max_iter == 4
    assert cloned.invert([0]).shape == (1, 8, 8, 1)


def test_miface_deterministic(softmax_target):
    a = MIFace(softmax_target, max_iter=30, optimizer="adam", learning_rate=0.05).fit()
    np.testing.assert_array_equal(a.invert([0, 5]), a.invert([0, 5]))


def test_grid_search_does_not_depend_on_n_jobs(digits, softmax_target):
    """Every random draw comes from random_state: parallel candidates score the same."""
    import joblib
    from sklearn.model_selection import GridSearchCV

    X, _ = digits
    attack = InversionModel(softmax_target, hidden_units=(8,), random_state=0)
    scores = []
    for n_jobs in (1, 2):
        with joblib.parallel_config(backend="threading"):
            search = GridSearchCV(attack, {"epochs": [1, 2]}, cv=2, n_jobs=n_jobs)
            search.fit(X[:40])
        scores.append(search.cv_results_["mean_test_score"])
        assert search.best_estimator_.target is softmax_target  # shared, never copied
    np.testing.assert_array_equal(scores[0], scores[1])


# ----------------------------------------------------------------------------- DeepInversion
def test_deepinversion_end_to_end_beats_chance(digits, cnn_target, eval_model):
    X, y = digits
    attack = DeepInversion(cnn_target, max_iter=200, random_state=0, eval_model=eval_model)
    images = attack.fit().invert(np.arange(10))
    assert images.shape == (10, 8, 8, 1) and attack.n_batchnorm_ == 2
    assert attack.score(X, y) > 2 * CHANCE
    np.testing.assert_array_equal(images, attack.invert(np.arange(10)))


def test_deepinversion_runs_on_a_wrapped_model_as_on_the_model_itself(cnn_target):
    # how a third-party network is used: a preprocessing layer in front of the loaded
    # model, whose BatchNormalization layers sit inside the nested model
    wrapped = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1.0), cnn_target])
    images = []
    for model in (cnn_target, wrapped):
        attack = DeepInversion(model, max_iter=40, random_state=0).fit()
        assert attack.n_batchnorm_ == 2
        images.append(attack.invert([0, 3]))
    np.testing.assert_allclose(images[1], images[0], atol=1e-4)
    # the BatchNorm layers are left as they were
    assert all("call" not in vars(bn) for bn in attack._bns)


def test_deepinversion_errors(softmax_target, cnn_target):
    with pytest.raises(ValueError, match="BatchNormalization"):
        DeepInversion(softmax_target).fit()
    with pytest.raises(AccessError):
        DeepInversion(Target(cnn_target, access="label-only")).fit()
    with pytest.raises(ValueError, match="Received: jitter"):
        DeepInversion(cnn_target, jitter=-1).fit()
    with pytest.raises(NotFittedError):
        DeepInversion(cnn_target).invert([0])


# ----------------------------------------------------------------------------- GAN setting
# Target on digits 0-4 (private: the even rows); the public images are the odd rows
# of every digit, unlabelled: the tiny 150-step prior needs the same distribution to
# beat chance (benchmarks/image_gan.py runs the disjoint-classes setting of GMI).
@pytest.fixture(scope="module")
def gan_setting(digits):
    X, y = digits
    private = (y < 5) & (np.arange(len(y)) % 2 == 0)
    Xp, yp, Xpub = X[private], y[private], X[1::2]
    keras.utils.set_random_seed(4)
    target = _train(
        cnn_classifier((8, 8, 1), 5, filters=(16, 32), dense_units=64, batch_norm=False),
        Xp,
        yp,
        20,
    )
    evaluator = _train(evaluation_classifier((8, 8, 1), 5, width=8, augment=False), Xp, yp, 25)
    generator = dcgan_generator(16, (8, 8, 1), width=16)
    critic = dcgan_critic((8, 8, 1), width=16)
    d_loss, g_loss = wgan_gp_losses()
    history = train_gan(
        generator, critic, Xpub, d_loss=d_loss, g_loss=g_loss, steps=150, learning_rate=1e-3, rng=0
    )
    return {
        "Xp": Xp,
        "yp": yp,
        "Xpub": Xpub,
        "target": target,
        "eval": evaluator,
        "generator": generator,
        "critic": critic,
        "history": history,
    }


def test_train_gan_is_deterministic_and_records_losses(gan_setting):
    history = gan_setting["history"]
    assert history["steps"] == 150 and len(history["d_loss"]) == 16
    assert all(np.isfinite(history["d_loss"]))


def test_train_gan_chunks_equal_the_step_by_step_loop(digits, monkeypatch):
    from kmi.attacks.image import _gan_prior

    def trained(chunk_size):
        monkeypatch.setattr(_gan_prior, "GAN_CHUNK_SIZE", chunk_size)
        keras.utils.set_random_seed(5)
        generator = dcgan_generator(4, (8, 8, 1), width=4)
        critic = dcgan_critic((8, 8, 1), width=4)
        d_loss, g_loss = wgan_gp_losses()
        history = train_gan(
            generator,
            critic,
            digits[0][1::2],
            d_loss=d_loss,
            g_loss=g_loss,
            steps=11,
            batch_size=16,
            rng=0,
        )
        return history, generator.get_weights() + critic.get_weights()

    (h1, w1), (h8, w8) = trained(1), trained(8)  # 11 steps: chunks of 8 and 3
    assert h8["steps"] == h1["steps"] == 11 and len(h8["d_loss"]) == 2  # steps 0 and 10
    np.testing.assert_allclose(h8["d_loss"], h1["d_loss"], rtol=1e-3, atol=1e-4)
    for a, b in zip(w8, w1):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_gmi_end_to_end_beats_chance(gan_setting):
    g = gan_setting
    attack = GMI(
        g["target"],
        generator=g["generator"],
        critic=g["critic"],
        max_iter=100,
        n_restarts=3,
        random_state=0,
        eval_model=g["eval"],
    )
    images = attack.fit().invert(np.arange(5))
    assert images.shape == (5, 8, 8, 1) and attack.latents_.shape == (5, 16)
    assert attack.score(g["Xp"], g["yp"]) > 0.2
    # every restart is kept; the returned one is the restart the target finds likeliest
    assert attack.restart_latents_.shape == (5, 3, 16)
    assert attack.restart_losses_.shape == (5, 3)
    best = attack.restart_losses_.argmin(axis=1)
    np.testing.assert_array_equal(attack.latents_, attack.restart_latents_[np.arange(5), best])
    np.testing.assert_allclose(attack.loss_, attack.restart_losses_.min(axis=1))
    np.testing.assert_array_equal(images, attack.invert(np.arange(5)))


def test_gmi_trains_prior_and_lomma_options(gan_setting):
    g = gan_setting
    attack = GMI(
        g["target"],
        latent_dim=8,
        gan_steps=3,
        gan_width=8,
        max_iter=5,
        identity_loss="logit",
        augmentation_models=1,
        distill_epochs=1,
        random_state=0,
    ).fit(g["Xpub"])
    assert attack.gan_history_["steps"] == 3 and len(attack.surrogates_) == 1
    assert attack.invert([1, 3]).shape == (2, 8, 8, 1)
    assert np.isfinite(attack.loss_).all()


def test_gmi_pca_prior_with_latent_noise_beats_chance(gan_setting):
    g = gan_setting
    Xpub = g["Xpub"]
    generator, critic = pca_prior(np.concatenate([Xpub, Xpub[:, :, ::-1]]), 10)
    kwargs = dict(
        generator=generator,
        critic=critic,
        optimizer="adam",
        learning_rate=0.05,
        latent_clip=3.0,
        latent_noise=0.5,
        max_iter=60,
        n_restarts=3,
        eval_model=g["eval"],
    )
    attack = GMI(g["target"], random_state=0, **kwargs).fit()
    images = attack.invert(np.arange(5))
    assert images.shape == (5, 8, 8, 1) and attack.latents_.shape == (5, 10)
    assert attack.score(g["Xp"], g["yp"]) > 0.2  # chance is 0.2
    # The noise is drawn from random_state: the same seed gives the same images.
    again = GMI(g["target"], random_state=0, **kwargs).fit().invert(np.arange(5))
    np.testing.assert_array_equal(images, again)
    other = GMI(g["target"], random_state=1, **kwargs).fit().invert(np.arange(5))
    assert not np.array_equal(images, other)
    # Both options reach the search: no noise, or SGD, gives other images from the same start.
    for change in ({"latent_noise": 0.0}, {"optimizer": "sgd"}):
        changed = GMI(g["target"], random_state=0, **{**kwargs, **change}).fit()
        assert not np.allclose(images, changed.invert(np.arange(5))), change


def test_gmi_errors(gan_setting):
    g = gan_setting
    with pytest.raises(AccessError):
        GMI(Target(g["target"], access="label-only")).fit(g["Xpub"])
    with pytest.raises(ValueError, match="Received: X=None"):
        GMI(g["target"]).fit()
    with pytest.raises(ValueError, match="Received: critic=None"):
        GMI(g["target"], generator=g["generator"]).fit()
    with pytest.raises(ValueError, match="Received: X.shape"):
        GMI(g["target"], gan_steps=1).fit(g["Xpub"][..., 0])
    with pytest.raises(ValueError, match="Received: identity_loss"):
        GMI(g["target"], generator=g["generator"], critic=g["critic"], identity_loss="x").fit()
    with pytest.raises(ValueError, match="Received: optimizer='rmsprop'"):
        GMI(g["target"], generator=g["generator"], critic=g["critic"], optimizer="rmsprop").fit()
    with pytest.raises(ValueError, match="Received: latent_noise=-0.1"):
        GMI(g["target"], generator=g["generator"], critic=g["critic"], latent_noise=-0.1).fit()
    wrong = dcgan_generator(16, (16, 16, 1), width=8)
    with pytest.raises(ValueError, match="generator output shape"):
        GMI(g["target"], generator=wrong, critic=g["critic"]).fit()
    attack = GMI(g["target"], generator=g["generator"], critic=g["critic"], max_iter=1).fit()
    with pytest.raises(ValueError, match="Received: y values"):
        attack.invert([7])


def test_kedmi_end_to_end_beats_chance(gan_setting):
    g = gan_setting
    attack = KEDMI(
        g["target"],
        latent_dim=16,
        gan_steps=150,
        gan_learning_rate=1e-3,
        gan_width=16,
        max_iter=100,
        random_state=0,
        eval_model=g["eval"],
    )
    images = attack.fit(g["Xpub"]).invert(np.arange(5))
    assert images.shape == (5, 8, 8, 1) and attack.mu_.shape == (5, 16)
    assert attack.critic_.output_shape[1] == (None, 5)
    assert attack.score(g["Xp"], g["yp"]) > 0.2
    assert attack.sample(np.arange(5), 2).shape == (5, 2, 8, 8, 1)


def test_kedmi_errors(gan_setting):
    g = gan_setting
    with pytest.raises(AccessError):
        KEDMI(Target(g["target"], access="black-box")).fit(g["Xpub"])
    with pytest.raises(ValueError, match="Received: n_samples"):
        KEDMI(g["target"], n_samples=0).fit(g["Xpub"])
    with pytest.raises(NotFittedError):
        KEDMI(g["target"]).invert([0])


def test_brepmi_label_only_beats_chance(gan_setting):
    g = gan_setting
    target = Target(g["target"], access="label-only")
    attack = BREPMI(
        target,
        generator=g["generator"],
        max_iter=30,
        n_directions=16,
        random_state=0,
        eval_model=g["eval"],
    )
    before = target.n_queries_
    images = attack.fit().invert(np.arange(5))
    assert images.shape == (5, 8, 8, 1) and attack.found_.all()
    assert target.n_queries_ > before and (attack.radius_ >= 2.0).all()
    assert attack.score(g["Xp"], g["yp"]) > 0.2
    again = (
        BREPMI(target, generator=g["generator"], max_iter=30, n_directions=16, random_state=0)
        .fit()
        .invert(np.arange(5))
    )
    np.testing.assert_array_equal(images, again)


def test_brepmi_errors_and_budget(gan_setting):
    g = gan_setting
    with pytest.raises(ValueError, match="Received: radius_growth"):
        BREPMI(g["target"], generator=g["generator"], radius_growth=1.0).fit()
    with pytest.raises(ValueError, match="Received: X=None"):
        BREPMI(g["target"]).fit()
    from kmi.targets import QueryBudgetExceededError

    budget = Target(g["target"], access="label-only", query_budget=100)
    with pytest.raises(QueryBudgetExceededError):
        BREPMI(budget, generator=g["generator"]).fit().invert([0, 1])


def _public_mean_top1(g):
    """The no-query baseline: the mean public image, offered for every label."""
    mean = np.repeat(g["Xpub"].mean(axis=0, keepdims=True), 5, axis=0)
    return attack_accuracy(g["eval"], mean, np.arange(5), top_k=1)


def test_lokt_label_only_beats_the_no_query_baseline(gan_setting):
    g = gan_setting
    target = Target(g["target"], access="label-only")
    attack = LOKT(
        target,
        generator=g["generator"],
        critic=g["critic"],
        n_surrogates=2,
        surrogate_epochs=10,
        n_synthetic=256,
        attack=GMI(max_iter=100, n_restarts=3),
        random_state=0,
        eval_model=g["eval"],
    ).fit(g["Xpub"])
    # fit asks one label per public and synthetic image; invert asks nothing
    assert target.n_queries_ == attack.n_fit_queries_ == len(g["Xpub"]) + 256
    assert len(attack.surrogates_) == 2 and attack.surrogate_agreement_ > 0.8
    images = attack.invert(np.arange(5))
    assert images.shape == (5, 8, 8, 1) and target.n_queries_ == attack.n_fit_queries_
    score = attack.score(g["Xp"], g["yp"])
    assert score > _public_mean_top1(g) and score >= 0.6
    assert attack.attack_.target_.access == "white-box"  # the surrogates, not the target
    with pytest.raises(AccessError, match="label-only"):
        target.scores(g["Xpub"][:2])  # what LOKT never asks for, the target refuses


def test_lokt_errors_budget_and_determinism(gan_setting):
    g = gan_setting
    small = dict(n_surrogates=1, surrogate_epochs=1, n_synthetic=8, random_state=0)
    prior = dict(generator=g["generator"], critic=g["critic"])
    tiny = GMI(max_iter=2, n_restarts=1)
    with pytest.raises(ValueError, match="Received: X=None"):
        LOKT(g["target"], **prior).fit()
    with pytest.raises(ValueError, match="Received: n_surrogates"):
        LOKT(g["target"], n_surrogates=0).fit(g["Xpub"])
    from kmi.targets import QueryBudgetExceededError

    budget = Target(g["target"], access="label-only", query_budget=100)
    with pytest.raises(QueryBudgetExceededError):
        LOKT(budget, **prior, **small, attack=tiny).fit(g["Xpub"])
    runs = [
        LOKT(g["target"], **prior, **small, attack=tiny).fit(g["Xpub"][:64]).invert([0, 3])
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*runs)
    # any white-box image attack runs on the surrogates, MIFace included
    mi = LOKT(g["target"], **prior, **small, attack=MIFace(max_iter=3)).fit(g["Xpub"][:64])
    assert mi.invert([1]).shape == (1, 8, 8, 1)


def test_rlbmi_black_box_beats_the_no_query_baseline_and_learns(gan_setting):
    g = gan_setting
    target = Target(g["target"], access="black-box")
    rl = dict(generator=g["generator"], n_episodes=300, batch_size=128, hidden_units=128)
    rl.update(updates_per_episode=2, learning_rate=1e-3)  # a faster learner for 300 episodes
    attack = RLBMI(target, **rl, random_state=0, eval_model=g["eval"]).fit()
    images = attack.invert(np.arange(5))
    # every episode asks the target the scores of 2 images per label, nothing else
    assert target.n_queries_ == 300 * 2 * 5 and attack.n_iter_ == 300
    assert images.shape == (5, 8, 8, 1) and attack.latents_.shape == (5, 16)
    # above the baseline's 0.2 (on this 150-step prior, 0.4 to 1.0 by backend and seed)
    assert attack.score(g["Xp"], g["yp"]) > _public_mean_top1(g)
    # the agent's learning, not the draws alone: without updates the policy stays as
    # initialised, and its most confident images are less confident
    frozen = RLBMI(target, **{**rl, "updates_per_episode": 0}, random_state=0).fit()
    frozen.invert(np.arange(5))
    assert attack.confidence_.mean() > frozen.confidence_.mean()
    again = RLBMI(target, **rl, random_state=0).fit().invert(np.arange(5))
    np.testing.assert_array_equal(images, again)


def test_rlbmi_uses_only_scores_and_keeps_its_best_when_the_budget_ends(gan_setting):
    g = gan_setting
    tiny = dict(generator=g["generator"], n_episodes=20, warmup_episodes=5, batch_size=8)
    with pytest.raises(AccessError, match="needs black-box access"):
        RLBMI(Target(g["target"], access="label-only"), **tiny).fit()
    with pytest.raises(ValueError, match="answers labels only"):
        RLBMI(Target(g["target"], access="black-box", output="label"), **tiny).fit()
    with pytest.raises(ValueError, match="Received: reward_weights"):
        RLBMI(g["target"], **tiny, reward_weights=(1.0, 2.0)).fit()
    top1 = Target(g["target"], access="black-box", output="top-k", top_k=1)
    assert RLBMI(top1, **tiny, random_state=0).fit().invert([0, 1]).shape == (2, 8, 8, 1)
    from kmi.targets import QueryBudgetExceededError

    budget = Target(g["target"], access="black-box", query_budget=50)
    attack = RLBMI(budget, **tiny, random_state=0).fit()
    with pytest.raises(QueryBudgetExceededError):
        attack.invert(np.arange(5))  # 10 queries an episode: 5 episodes, then the sixth
    assert budget.n_queries_ == 50 and attack.n_iter_ == 5
    assert (attack.confidence_ > 0).all()  # the best of the 5 episodes is kept


def test_plgmi_conditional_gan_beats_the_no_query_baseline(gan_setting):
    g = gan_setting
    target = Target(g["target"])
    gan = dict(gan_steps=150, gan_width=16, latent_dim=16, gan_learning_rate=1e-3, top_n=100)
    attack = PLGMI(target, **gan, max_iter=100, n_restarts=3, random_state=0)
    attack.set_params(eval_model=g["eval"]).fit(g["Xpub"])
    # top-n selection: 100 public images per class, by the target's confidence
    np.testing.assert_array_equal(attack.pseudo_labels_, np.repeat(np.arange(5), 100))
    assert attack.generator_.inputs[0].shape[-1] == 16 + 5 and attack.latent_dim_ == 16
    # the scores of the public images, then batch_size a generator step (its loss reads
    # the target)
    assert target.n_queries_ == len(g["Xpub"]) + 150 * 64
    assert attack.score(g["Xp"], g["yp"]) > _public_mean_top1(g)
    assert attack.restart_losses_.shape == (5, 3)
    # the generator is conditioned on the class: random codes, no search, already
    # give images the evaluator reads as their class more often than chance
    no_search = attack.set_params(max_iter=0).invert(np.arange(5))
    assert attack_accuracy(g["eval"], no_search, np.arange(5), top_k=1) > 0.2


def test_conditional_train_gan_checks_its_classes(digits):
    generator = dcgan_generator(4 + 3, (8, 8, 1), width=4, seed=0)
    critic = dcgan_critic((8, 8, 1), width=4, n_classes=3, seed=0)
    d_loss, g_loss = wgan_gp_losses()
    X = digits[0][:32]
    with pytest.raises(ValueError, match="one-hot class of every image"):
        train_gan(
            generator, critic, X, d_loss=d_loss, g_loss=g_loss, steps=1, conditional_classes=3
        )
    seen = []

    def g_loss_spy(critic_fn, real, fake, classes):
        seen.append(classes)
        return g_loss(critic_fn, real, fake, classes)

    onehot = np.eye(3, dtype="float32")[np.arange(32) % 3]
    history = train_gan(
        generator,
        critic,
        X,
        d_loss=d_loss,
        g_loss=g_loss_spy,
        extra=onehot,
        steps=2,
        batch_size=8,
        conditional_classes=3,
        rng=0,
    )
    assert history["steps"] == 2 and seen[0].shape[-1] == 6  # the real, then the fake classes


# ----------------------------------------------------------------------------- InversionModel
def test_inversion_model_reconstructs(gan_setting):
    g = gan_setting
    target = Target(g["target"], access="black-box", output="top-k", top_k=3)
    attack = InversionModel(target, truncation=3, epochs=40, random_state=0)
    attack.fit(g["Xpub"])
    rebuilt = attack.invert(target.query(g["Xp"][:50]))
    assert rebuilt.shape == (50, 8, 8, 1)
    # better than the mean public image, on the private images
    mean_error = ((g["Xp"][:50] - g["Xpub"].mean(0)) ** 2).mean()
    assert ((rebuilt - g["Xp"][:50]) ** 2).mean() < mean_error
    assert attack.score(g["Xp"][:50]) > 10 * np.log10(1 / mean_error)
    reps = attack.invert(np.arange(5))
    assert attack_accuracy(g["eval"], reps, np.arange(5), top_k=1) >= 0.6
    assert reps.std(axis=0).mean() > 0.05


def test_inversion_model_decoder_does_not_collapse_on_mnist():
    """Regression: with BatchNormalization in the default decoder, reconstructions at
    inference collapsed to nearly one image (pixel std across images 0.03 against
    0.13 in training mode) on near one-hot MNIST predictions."""
    from kmi.datasets import load_mnist_5k

    X, y = load_mnist_5k(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    target = softmax_regression((28, 28, 1), 10)
    target.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    target.fit(X[:2000], y[:2000], epochs=5, verbose=0)
    attack = InversionModel(target, epochs=30, random_state=0).fit(X[2000:3000])
    rebuilt = attack.invert(attack.target_.query(X[:64]))
    assert rebuilt.std(axis=0).mean() > 0.08


def test_inversion_model_errors(gan_setting):
    g = gan_setting
    with pytest.raises(AccessError):
        InversionModel(Target(g["target"], access="label-only")).fit(g["Xpub"])
    attack = InversionModel(g["target"], epochs=1).fit(g["Xpub"][:20])
    with pytest.raises(ValueError, match="Received: outputs.shape"):
        attack.invert(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        attack.invert(np.full((1, 5), np.nan))
    with pytest.raises(ValueError, match="Received: truncation"):
        InversionModel(g["target"], truncation=0).fit(g["Xpub"])
    with pytest.raises(ValueError, match="Received: X.shape"):
        InversionModel(g["target"]).fit(g["Xpub"][0])


# ------------------------------------------------------------------------ pixel range
_GAN = {"gan_steps": 2, "gan_batch_size": 16, "gan_width": 8, "latent_dim": 8}
_TINY = {
    MIFace: {"max_iter": 20, "learning_rate": 1.0, "init": "random"},
    DeepInversion: {"max_iter": 10},
    InversionModel: {"epochs": 2},
    GMI: {**_GAN, "max_iter": 5, "n_restarts": 1},
    KEDMI: {**_GAN, "max_iter": 5, "n_draws": 2},
    BREPMI: {**_GAN, "max_iter": 2, "n_directions": 4, "init_batches": 2, "init_batch_size": 16},
}


@pytest.mark.filterwarnings("ignore:BREPMI found no start")  # a 2-step search
@pytest.mark.parametrize("cls", list(_TINY), ids=lambda c: c.__name__)
def test_attacks_work_in_the_data_pixel_range(cls, digits, cnn_target):
    """A model trained on raw 0..16 digits (Rescaling in front) is attacked as the
    same model on [0, 1]: the same search, the images returned in 0..16."""
    X, _ = digits
    raw = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16), cnn_target])
    data_free = cls is DeepInversion  # no images to read the range from: it is given
    given = {"pixel_range": (0, 16)} if data_free else {}
    target = Target(raw, query_budget=10**6)
    on_raw = cls(target, **_TINY[cls], **given, random_state=0).fit(X[:64] * 16)
    on_unit = cls(cnn_target, **_TINY[cls], random_state=0).fit(X[:64])
    assert on_raw.pixel_range_ == (0.0, 16.0) and on_unit.pixel_range_ == (0.0, 1.0)
    images = on_raw.invert([0, 3])
    expected = 16 * on_unit.invert([0, 3])
    np.testing.assert_allclose(images, expected, atol=2e-3)
    assert images.max() > 1.5 and images.min() >= 0 and images.max() <= 16
    # the queries are counted on the user's target, through the range mapping
    assert target.n_queries_ == on_raw.target_.n_queries_ == on_unit.target_.n_queries_ > 0


def test_pixel_range_errors_and_scores(digits, softmax_target, eval_model):
    X, y = digits
    for bad in [(1, 0), (0, float("nan")), (0,), "0..255"]:
        with pytest.raises(ValueError, match="pixel_range.* must"):
            MIFace(softmax_target, pixel_range=bad).fit()
    # score measures in the data's range: the same success on 0..255 data
    raw = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255), softmax_target]
    )
    scaled_eval = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255), eval_model]
    )
    scores = [
        MIFace(m, max_iter=30, learning_rate=1.0, eval_model=e).fit(data).score(data, y)
        for m, e, data in [(softmax_target, eval_model, X), (raw, scaled_eval, X * 255)]
    ]
    assert scores[0] == scores[1]
    inv = [
        InversionModel(m, epochs=2, random_state=0).fit(data[:200]).score(data[200:300])
        for m, data in [(softmax_target, X), (raw, X * 255)]
    ]
    assert inv[1] == pytest.approx(inv[0], abs=0.01)  # PSNR with the data's range


@pytest.mark.parametrize("cls", [MIFace, DeepInversion, GMI, KEDMI, BREPMI, LOKT, InversionModel])
def test_estimator_params_round_trip(cls):
    attack = cls(None, random_state=3)
    params = attack.get_params()
    assert params["random_state"] == 3 and params["target"] is None
    assert clone(attack).get_params() == params
    with pytest.raises(ValueError, match="Received: target=None"):
        attack.fit(np.zeros((2, 8, 8, 1)))


@pytest.mark.parametrize("cls", [MIFace, DeepInversion, GMI, KEDMI, BREPMI, InversionModel])
@pytest.mark.parametrize(
    "check_name",
    [
        "check_no_attributes_set_in_init",
        "check_get_params_invariance",
        "check_set_params",
        "check_parameters_default_constructible",
    ],
)
def test_sklearn_checks_that_apply(cls, check_name):
    """The scikit-learn checks that need no 2-D data (image attacks take 4-D images)."""
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check_name)(cls.__name__, cls(random_state=0))


# ----------------------------------------------------------------------------- compiled loop
def _optimising_attack(name, request):
    """A fitted attack of ``name`` on its tiny target, 6 steps."""
    steps = dict(max_iter=6, random_state=0)
    if name == "MIFace":
        return MIFace(request.getfixturevalue("softmax_target"), max_iter=6).fit()
    if name == "DeepInversion":
        return DeepInversion(request.getfixturevalue("cnn_target"), **steps).fit()
    g = request.getfixturevalue("gan_setting")
    if name == "GMI":
        prior = dict(generator=g["generator"], critic=g["critic"], **steps)
        return GMI(g["target"], latent_noise=0.1, **prior).fit(g["Xpub"])
    kedmi = KEDMI(g["target"], gan_steps=1, gan_width=4, latent_dim=4, **steps)
    return kedmi.fit(g["Xpub"][:32])


@pytest.mark.parametrize("name", ["MIFace", "DeepInversion", "GMI", "KEDMI"])
def test_chunked_loop_equals_the_step_by_step_loop(name, request, monkeypatch):
    from kmi.attacks import _optim

    attack = _optimising_attack(name, request)
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 4)
    chunked = attack.invert([0, 1, 2])  # 6 steps: a chunk of 4, then one of 2
    assert attack.n_iter_ == 6
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 1)  # one compiled call per step
    stepwise = attack.invert([0, 1, 2])
    np.testing.assert_allclose(chunked, stepwise, atol=1e-4)
