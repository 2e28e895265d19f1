"""RLB-MI: black-box inversion by reinforcement learning over a GAN prior (Han et al. 2023)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Self

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from kmi import backend
from kmi._docstring import fill_doc
from kmi.attacks._optim import adam_apply, adam_init
from kmi.attacks.image._common import (
    COMMON_CONSTRAINTS,
    GAN_CONSTRAINTS,
    PARAMS_DOC,
    ClassInversionMixin,
)
from kmi.attacks.image._gan_prior import GANPriorMixin, generate
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.base import BaseAttack
from kmi.targets import QueryBudgetExceededError

_LOG_STD = (-20.0, 2.0)  # SAC's bounds on the policy's log standard deviation
_EPS = 1e-7  # the floor of a confidence (or margin) before its logarithm, as in the paper


def _mlp_init(rng, sizes):
    """Glorot-uniform weights and zero biases of a dense ReLU network, as NumPy."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype("float32"))
        params.append(np.zeros(fan_out, "float32"))
    return params


def _mlp(params, x):
    n = len(params) // 2
    for i in range(n):
        x = ops.matmul(x, params[2 * i]) + params[2 * i + 1]
        if i < n - 1:
            x = ops.relu(x)
    return x


def _policy(actor, state, onehot, eps):
    """SAC's tanh-Gaussian policy: the sampled action, its log-density, the mean action."""
    out = _mlp(actor, ops.concatenate([state, onehot], axis=-1))
    mu, log_std = ops.split(out, 2, axis=-1)
    log_std = ops.clip(log_std, *_LOG_STD)
    u = mu + ops.exp(log_std) * eps
    action = ops.tanh(u)
    log_prob = ops.sum(
        -0.5 * eps**2 - log_std - 0.5 * np.log(2.0 * np.pi) - ops.log(1.0 - action**2 + 1e-6),
        axis=-1,
    )
    return action, log_prob, ops.tanh(mu)


def _q(critic, state, action, onehot):
    return _mlp(critic, ops.concatenate([state, action, onehot], axis=-1))[:, 0]


def _sac_update(state, batch, hp):
    """One SAC step on a minibatch of one-step episodes (the target of Q is the reward)."""
    actor, q1, q2, log_alpha, opt_actor, opt_q, opt_alpha = state
    s, a, r, onehot, eps = batch
    lr, target_entropy = hp
    n_q = len(q1)

    def q_loss(qs):
        err1 = _q(qs[:n_q], s, a, onehot) - r
        err2 = _q(qs[n_q:], s, a, onehot) - r
        return ops.mean(err1**2) + ops.mean(err2**2), ()

    q_value, _, q_grads = backend.value_and_grad_with_aux(q_loss, [*q1, *q2])
    qs, opt_q = adam_apply(opt_q, q_grads, [*q1, *q2], learning_rate=lr)
    q1, q2 = qs[:n_q], qs[n_q:]
    alpha = ops.exp(log_alpha[0])

    def actor_loss(params):
        action, log_prob, _ = _policy(params, s, onehot, eps)
        q = ops.minimum(_q(q1, s, action, onehot), _q(q2, s, action, onehot))
        return ops.mean(alpha * log_prob - q), log_prob

    a_value, log_prob, a_grads = backend.value_and_grad_with_aux(actor_loss, actor)
    actor, opt_actor = adam_apply(opt_actor, a_grads, actor, learning_rate=lr)
    slack = ops.stop_gradient(log_prob + target_entropy)

    def alpha_loss(params):
        return -ops.mean(params[0] * slack), ()

    _, _, t_grads = backend.value_and_grad_with_aux(alpha_loss, log_alpha)
    log_alpha, opt_alpha = adam_apply(opt_alpha, t_grads, log_alpha, learning_rate=lr)
    new_state = (actor, q1, q2, log_alpha, opt_actor, opt_q, opt_alpha)
    return new_state, ops.stack([q_value, a_value, ops.exp(log_alpha[0])])


def _act(actor, state, onehot, eps):
    action, _, mean = _policy(actor, state, onehot, eps)
    return action, mean


@fill_doc(**PARAMS_DOC)
class RLBMI(PixelRangeMixin, GANPriorMixin, ClassInversionMixin, BaseAttack):
    """Black-box model inversion by reinforcement learning (Han et al. 2023).

    The search over the GAN prior's latent space is a Markov decision process whose
    only signal is the target's confidence. At every episode, for every label at
    once, a soft actor-critic (SAC) agent sees a random latent code (the state),
    picks a code (the action; the next state is ``diversity * state + (1 -
    diversity) * action``), and the target scores the generated images. The reward
    is the paper's ``w1 log p_y(G(s')) + w2 log p_y(G(a)) + w3 log max(eps,
    p_y(G(s')) - max_j!=y p_j(G(s')))``. The agent's critics learn the reward from
    these transitions, and its policy learns to pick codes the critics rate high.
    Each episode also runs the policy's mean action from a fresh code, as the
    paper's test rollout; the image of the most confident test rollout of each
    label is the result.

    As in the paper's experiments, an episode is one step (``max_step=1``) and the
    diversity factor is 0 (so the state's and the action's images are one image,
    queried once). One agent serves every label (the label is an input of its
    networks), where the paper trains one agent per class: that lets every label's
    episodes run in one batch.

    Every target query is counted and budgeted: an episode asks ``2 * n_labels``
    scores (``3 * n_labels`` with a diversity above 0). Confidences, rounded or
    top-k scores are enough; labels alone are not (use :class:`BREPMI` or
    :class:`LOKT`).

    Parameters
    ----------
    target : Target, keras.Model or callable
        Black-box access is enough: only :meth:`~kmi.targets.Target.query` is used.
    {gan_params}
    n_episodes : int, default=2000
        Episodes per label (the paper runs 40,000 per class on GPUs).
    warmup_episodes : int, default=50
        Episodes with uniform random actions before the policy acts and learns.
    batch_size : int, default=256
        Transitions per SAC update, drawn from every label's past episodes.
    updates_per_episode : int, default=1
    hidden_units : int, default=256
        Width of the two hidden layers of the policy and of each critic.
    learning_rate : float, default=5e-4
        Adam's, for the policy, the critics and the entropy temperature.
    reward_weights : tuple of 3 floats, default=(2.0, 2.0, 8.0)
        The paper's ``(w1, w2, w3)``.
    diversity : float, default=0.0
        The paper's ``alpha``, in [0, 1).
    critic : ignored
        (The GAN prior's critic plays no part in RLB-MI.)
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

    Attributes
    ----------
    target_ : Target
    generator_ : keras.Model
    latents_ : ndarray of shape (n_labels, latent_dim)
        The latent code of each returned image.
    confidence_ : ndarray of shape (n_labels,)
        The target's confidence in the label for each returned image.
    history_ : dict
        Per episode: ``"reward"`` (the mean over labels), ``"confidence"`` (the mean
        test-rollout confidence); per SAC update ``"q_loss"``, ``"policy_loss"``,
        ``"temperature"``.
    n_iter_ : int
        Episodes run in the last :meth:`invert`.
    interrupted_ : bool

    Raises
    ------
    kmi.targets.QueryBudgetExceededError
        From ``invert``, when the target's budget runs out; ``latents_`` and
        ``confidence_`` then hold the best found before it.

    References
    ----------
    G. Han, J. Choi, H. Lee and J. Kim. Reinforcement learning-based black-box model
    inversion attacks. CVPR 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import RLBMI
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0), access="black-box")
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = RLBMI(target, gan_steps=2, gan_width=4, latent_dim=4, n_episodes=4,
    ...                warmup_episodes=2, batch_size=4, hidden_units=8,
    ...                random_state=0).fit(public)
    >>> attack.invert([0, 1]).shape
    (2, 8, 8, 1)
    >>> target.n_queries_  # 4 episodes x 2 labels x (an action and a test rollout)
    16
    """

    required_access = "black-box"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "n_episodes": [Interval(Integral, 1, None, closed="left")],
        "warmup_episodes": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "updates_per_episode": [Interval(Integral, 0, None, closed="left")],
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "reward_weights": [tuple, list],
        "diversity": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        target=None,
        *,
        generator=None,
        critic=None,
        latent_dim=100,
        gan_steps=2000,
        gan_batch_size=64,
        gan_width=32,
        gan_learning_rate=1e-4,
        n_episodes=2000,
        warmup_episodes=50,
        batch_size=256,
        updates_per_episode=1,
        hidden_units=256,
        learning_rate=5e-4,
        reward_weights=(2.0, 2.0, 8.0),
        diversity=0.0,
        eval_model=None,
        random_state=None,
        verbose=0,
        pixel_range=None,
    ):
        self.target = target
        self.generator = generator
        self.critic = critic
        self.latent_dim = latent_dim
        self.gan_steps = gan_steps
        self.gan_batch_size = gan_batch_size
        self.gan_width = gan_width
        self.gan_learning_rate = gan_learning_rate
        self.n_episodes = n_episodes
        self.warmup_episodes = warmup_episodes
        self.batch_size = batch_size
        self.updates_per_episode = updates_per_episode
        self.hidden_units = hidden_units
        self.learning_rate = learning_rate
        self.reward_weights = reward_weights
        self.diversity = diversity
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Train (or take) the GAN prior; return ``self``. The target is not queried."""
        weights = np.asarray(self.reward_weights, dtype="float64")
        if weights.shape != (3,) or not np.all(np.isfinite(weights)):
            raise ValueError(
                "reward_weights must be 3 finite numbers (w1, w2, w3). "
                f"Received: reward_weights={self.reward_weights!r}"
            )
        target = self.target_
        if target.output == "label":
            raise ValueError(
                "RLB-MI's reward is the target's confidence, but this target answers "
                "labels only; use BREPMI or LOKT for a label-only target. "
                "Received: output='label'"
            )
        shape = self.input_shape_ = self._prior_input_shape(X)
        X = self._fit_pixel_range(X)
        rs = check_random_state(self.random_state)
        self._fit_prior(X, shape, np.random.default_rng(rs.randint(2**31)), need_critic=False)
        return self

    def _confidences(self, latents):
        """The target's scores of the images of ``latents``, as probabilities."""
        out = np.asarray(self.target_.query(generate(self.generator_, latents)), "float64")
        return np.exp(out) if self.target_.output == "logits" else out

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Train the agent on the labels of ``y`` and return each one's best image.

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        n, d, k = len(idx), self.latent_dim_, self.target_.n_classes_
        w1, w2, w3 = (float(w) for w in self.reward_weights)
        div = float(self.diversity)
        rs = check_random_state(self.random_state)
        rng = np.random.default_rng(rs.randint(2**31))
        width = int(self.hidden_units)
        actor = _mlp_init(rng, [d + k, width, width, 2 * d])
        q1 = _mlp_init(rng, [2 * d + k, width, width, 1])
        q2 = _mlp_init(rng, [2 * d + k, width, width, 1])
        params = [[ops.convert_to_tensor(p) for p in net] for net in (actor, q1, q2)]
        log_alpha = [ops.zeros(())]
        state = (*params, log_alpha, adam_init(params[0]), adam_init(params[1] + params[2]))
        state = (*state, adam_init(log_alpha))
        hp = (ops.convert_to_tensor(float(self.learning_rate)), ops.convert_to_tensor(-float(d)))
        update, act = backend.jit(_sac_update), backend.jit(_act)
        onehot = np.eye(k, dtype="float32")[idx]

        episodes = int(self.n_episodes)
        buf_s = np.zeros((episodes * n, d), "float32")
        buf_a = np.zeros((episodes * n, d), "float32")
        buf_r = np.zeros(episodes * n, "float32")
        buf_y = np.tile(idx, episodes).astype("int32")  # every episode asks every label
        filled = 0
        best_z = np.zeros((n, d), "float32")
        best_conf = np.full(n, -1.0)
        history = {k: [] for k in ("reward", "confidence", "q_loss", "policy_loss", "temperature")}
        rows = np.arange(n)
        episode, interrupted = 0, False
        bar = keras.utils.Progbar(episodes, unit_name="episode") if self.verbose else None
        try:
            for episode in range(episodes):
                s = rng.standard_normal((n, d)).astype("float32")
                s_test = rng.standard_normal((n, d)).astype("float32")
                eps = rng.standard_normal((2 * n, d)).astype("float32")
                both = np.concatenate([s, s_test])
                sampled, mean = act(state[0], both, np.concatenate([onehot, onehot]), eps)
                if episode < int(self.warmup_episodes):
                    a = rng.uniform(-1.0, 1.0, (n, d)).astype("float32")
                else:
                    a = ops.convert_to_numpy(sampled)[:n]
                a_test = ops.convert_to_numpy(mean)[n:]
                z = div * s + (1.0 - div) * a
                z_test = div * s_test + (1.0 - div) * a_test
                batch = [z, z_test] + ([a] if div else [])
                p = self._confidences(np.concatenate(batch).astype("float32"))
                p_z, p_test = p[:n], p[n : 2 * n]
                p_a = p[2 * n :] if div else p_z
                conf = p_z[rows, idx]
                others = p_z.copy()
                others[rows, idx] = -np.inf
                margin = conf - others.max(axis=1)
                reward = (
                    w1 * np.log(np.maximum(conf, _EPS))
                    + w2 * np.log(np.maximum(p_a[rows, idx], _EPS))
                    + w3 * np.log(np.maximum(margin, _EPS))
                )
                sl = slice(filled, filled + n)
                buf_s[sl], buf_a[sl], buf_r[sl] = s, a, reward
                filled += n
                test_conf = p_test[rows, idx]
                better = test_conf > best_conf
                best_conf[better], best_z[better] = test_conf[better], z_test[better]
                history["reward"].append(float(reward.mean()))
                history["confidence"].append(float(test_conf.mean()))
                if episode + 1 >= int(self.warmup_episodes) and filled >= int(self.batch_size):
                    for _ in range(int(self.updates_per_episode)):
                        pick = rng.integers(0, filled, int(self.batch_size))
                        noise = rng.standard_normal((len(pick), d)).astype("float32")
                        mb = (buf_s[pick], buf_a[pick], buf_r[pick])
                        mb = (*mb, np.eye(k, dtype="float32")[buf_y[pick]], noise)
                        state, losses = update(state, mb, hp)
                        q_loss, policy_loss, temperature = ops.convert_to_numpy(losses)
                        history["q_loss"].append(float(q_loss))
                        history["policy_loss"].append(float(policy_loss))
                        history["temperature"].append(float(temperature))
                if bar is not None:
                    bar.update(episode + 1, [("confidence", float(best_conf.mean()))])
            episode = episodes
        except KeyboardInterrupt:
            interrupted = True
            warnings.warn(
                f"Interrupted after {episode} of {episodes} episodes; returning the most "
                "confident images so far.",
                RuntimeWarning,
                stacklevel=2,
            )
        except QueryBudgetExceededError:
            self._keep(best_z, best_conf, history, episode, interrupted)
            raise
        self._keep(best_z, best_conf, history, episode, interrupted)
        return self._to_data_range(generate(self.generator_, self.latents_))

    def _keep(self, best_z, best_conf, history, episodes, interrupted):
        self.latents_, self.confidence_ = best_z, best_conf
        self.history_, self.n_iter_, self.interrupted_ = history, episodes, interrupted
