"""The GAN prior shared by GMI, KED-MI and BREP-MI, written once.

:func:`train_gan` trains a generator and a critic with pluggable losses, in
compiled, stateless steps (``Model.stateless_call`` and
``Optimizer.stateless_apply`` inside :func:`kmi.backend.jit`), so one loop runs on
TensorFlow and JAX. :func:`wgan_gp_losses` gives the WGAN-GP losses of GMI
(Gulrajani et al. 2017; Zhang et al. 2020); KED-MI passes its own.
:class:`GANPriorMixin` fits that prior (or takes a trained one) for an attack, with
networks initialised from the attack's ``random_state``.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from kmi import backend
from kmi.attacks._optim import adam_apply, adam_init
from kmi.attacks.image._common import seeds
from kmi.attacks.image._pixels import UNIT, unit_input, unit_output
from kmi.utils.validation import check_images

__all__ = [
    "GANPriorMixin",
    "critic_score",
    "generate",
    "gradient_penalty",
    "train_gan",
    "wgan_gp_losses",
]

GAN_CHUNK_SIZE = 20
"""Generator steps per compiled call of :func:`train_gan` (progress and interruption
act in between)."""


def critic_score(out):
    """The realness score of a critic output (its first output if it has several)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    return ops.reshape(out, (-1,))


def gradient_penalty(critic_fn, real, fake, eps):
    """WGAN-GP's ``E[(||grad D(x_hat)|| - 1)^2]`` on interpolates of real and fake."""
    x_hat = eps * real + (1.0 - eps) * fake

    def total(x):
        scores = critic_score(critic_fn(x))
        return ops.sum(scores), scores

    _, _, grad = backend.value_and_grad_with_aux(total, x_hat)
    norm = ops.sqrt(ops.sum(ops.reshape(grad, (ops.shape(grad)[0], -1)) ** 2, axis=1) + 1e-12)
    return ops.mean((norm - 1.0) ** 2)


def wgan_gp_losses(gp_weight: float = 10.0):
    """``(d_loss, g_loss)`` of WGAN-GP for :func:`train_gan`."""

    def d_loss(critic_fn, real, fake, extra, eps):
        d_real = critic_score(critic_fn(real))
        d_fake = critic_score(critic_fn(fake))
        return (
            ops.mean(d_fake)
            - ops.mean(d_real)
            + gp_weight * gradient_penalty(critic_fn, real, fake, eps)
        )

    def g_loss(critic_fn, real, fake, extra):
        return -ops.mean(critic_score(critic_fn(fake)))

    return d_loss, g_loss


def train_gan(
    generator: keras.Model,
    critic: keras.Model,
    X,
    *,
    d_loss,
    g_loss,
    extra=None,
    steps: int = 2000,
    batch_size: int = 64,
    n_critic: int = 5,
    learning_rate: float = 1e-4,
    beta_1: float = 0.5,
    beta_2: float = 0.9,
    rng=None,
    queries=None,
    conditional_classes: int | None = None,
    verbose: int = 0,
    desc: str = "GAN",
) -> dict:
    """Train ``generator`` and ``critic`` in place on the images ``X``.

    The steps run in chunks of :data:`GAN_CHUNK_SIZE` generator steps inside one
    compiled loop (each generator step after ``n_critic`` critic steps); batches,
    latent codes and interpolation weights are drawn from ``rng`` a chunk at a time,
    in the order of a step-by-step loop.

    Parameters
    ----------
    generator, critic : keras.Model
        Built models; the generator maps ``(n, latent_dim)`` to images shaped like ``X``.
    X : ndarray of shape (n, height, width, channels)
    d_loss : callable
        ``d_loss(critic_fn, real, fake, extra, eps) -> scalar``; ``critic_fn`` calls the
        critic with the weights being trained, ``extra`` holds the rows of ``extra``
        matching ``real``, ``eps`` has shape (batch, 1, 1, 1), uniform in [0, 1].
    g_loss : callable
        ``g_loss(critic_fn, real, fake, extra) -> scalar``; ``fake`` is differentiable
        with respect to the generator's weights.
    extra : ndarray, default=None
        Per-image side information (e.g. the target's soft labels), aligned with ``X``.
    steps : int, default=2000
        Generator steps; the critic takes ``n_critic`` steps before each.
    batch_size : int, default=64
    n_critic : int, default=5
    learning_rate, beta_1, beta_2 : float
        Adam's, for both networks.
    rng : numpy.random.Generator or int, default=None
        Draws batches and latent codes: runs are reproducible.
    queries : kmi.targets.Target, default=None
        The target ``g_loss`` reads, if it does (KED-MI's entropy term): each
        generator step is recorded on it as ``batch_size`` queries.
    conditional_classes : int, default=None
        A class-conditional GAN (PLG-MI's): the generator's last
        ``conditional_classes`` inputs are a one-hot class, drawn uniformly for each
        fake image (the other inputs are the Gaussian code), and ``extra`` holds the
        one-hot classes of ``X``. The losses then receive, as ``extra``, the real
        images' classes followed by the fake ones' (``conditional_classes`` columns
        each).
    verbose : int, default=0
    desc : str

    Returns
    -------
    dict
        ``{"d_loss": [...], "g_loss": [...], "steps": n_done, "interrupted": bool}``,
        losses every 10 generator steps. Interrupting (KeyboardInterrupt) keeps the
        weights reached so far.
    """
    rng = np.random.default_rng(rng)
    X = np.asarray(X, dtype="float32")
    extra = np.zeros((len(X), 1), "float32") if extra is None else np.asarray(extra, "float32")
    latent_dim = int(generator.inputs[0].shape[-1])
    n_cond = int(conditional_classes or 0)
    if n_cond and extra.shape != (len(X), n_cond):  # (the zeros above when None)
        raise ValueError(
            f"A conditional GAN needs the one-hot class of every image of X as extra, "
            f"shape ({len(X)}, {n_cond}). Received: extra shape={np.shape(extra)}"
        )
    batch_size = int(min(batch_size, len(X)))
    lr, b1, b2 = float(learning_rate), float(beta_1), float(beta_2)

    def adam(state, grads, params):
        return adam_apply(state, grads, params, learning_rate=lr, beta_1=b1, beta_2=b2)

    def values(variables):
        return [ops.convert_to_tensor(v.value) for v in variables]

    def make_critic_fn(d_tv, d_ntv):
        def critic_fn(x):
            out, _ = critic.stateless_call(d_tv, d_ntv, x, training=True)
            return out

        return critic_fn

    def with_fake_classes(ext, z):
        # a conditional GAN's losses see the fake images' classes after the real ones'
        return ops.concatenate([ext, z[:, latent_dim - n_cond :]], axis=-1) if n_cond else ext

    def d_step(d_tv, d_ntv, d_ov, g_tv, g_ntv, real, ext, z, eps):
        ext = with_fake_classes(ext, z)
        fake, _ = generator.stateless_call(g_tv, g_ntv, z, training=True)
        fake = ops.stop_gradient(fake)

        def loss(params):
            return d_loss(make_critic_fn(params, d_ntv), real, fake, ext, eps), ()

        value, _, grads = backend.value_and_grad_with_aux(loss, d_tv)
        d_tv, d_ov = adam(d_ov, grads, d_tv)
        return d_tv, d_ov, value

    def g_step(g_tv, g_ntv, g_ov, d_tv, d_ntv, real, ext, z):
        ext = with_fake_classes(ext, z)

        def loss(params):
            fake, new_ntv = generator.stateless_call(params, g_ntv, z, training=True)
            return g_loss(make_critic_fn(d_tv, d_ntv), real, fake, ext), new_ntv

        value, new_ntv, grads = backend.value_and_grad_with_aux(loss, g_tv)
        g_tv, g_ov = adam(g_ov, grads, g_tv)
        return g_tv, new_ntv, g_ov, value

    n_crit = int(n_critic)

    def chunk(state, X_t, extra_t, draws, n_steps):
        """Up to ``n_steps`` generator steps (each after ``n_critic`` critic steps)."""
        idx_all, z_all, eps_all = draws  # (width, n_critic + 1, batch[, ...])
        width = ops.shape(idx_all)[0]
        positions = ops.arange(width)

        def body(i, state, d_curve, g_curve):
            g_tv, g_ntv, g_ov, d_tv, d_ov = state
            idx, z, eps = (ops.take(a, i, axis=0) for a in (idx_all, z_all, eps_all))

            def critic_step(j, carry):
                d_tv, d_ov, _ = carry
                rows = ops.take(idx, j, axis=0)
                return d_step(
                    d_tv,
                    d_ntv,
                    d_ov,
                    g_tv,
                    g_ntv,
                    ops.take(X_t, rows, axis=0),
                    ops.take(extra_t, rows, axis=0),
                    ops.take(z, j, axis=0),
                    ops.take(eps, j, axis=0),
                )

            start = (d_tv, d_ov, ops.zeros(()))
            d_tv, d_ov, d_value = ops.fori_loop(0, n_crit, critic_step, start)
            rows = idx[n_crit]
            g_tv, g_ntv, g_ov, g_value = g_step(
                g_tv,
                g_ntv,
                g_ov,
                d_tv,
                d_ntv,
                ops.take(X_t, rows, axis=0),
                ops.take(extra_t, rows, axis=0),
                z[n_crit],
            )
            d_curve = ops.where(positions == i, d_value, d_curve)
            g_curve = ops.where(positions == i, g_value, g_curve)
            return i + 1, (g_tv, g_ntv, g_ov, d_tv, d_ov), d_curve, g_curve

        curve = ops.zeros((width,))
        return ops.while_loop(
            lambda i, *_: i < n_steps, body, (ops.zeros((), "int32"), state, curve, curve)
        )

    chunk_c = backend.jit(chunk)
    g_tv, g_ntv = values(generator.trainable_variables), values(generator.non_trainable_variables)
    d_tv, d_ntv = values(critic.trainable_variables), values(critic.non_trainable_variables)
    g_ov, d_ov = adam_init(g_tv), adam_init(d_tv)
    state = (g_tv, g_ntv, g_ov, d_tv, d_ov)
    X_t, extra_t = ops.convert_to_tensor(X), ops.convert_to_tensor(extra)
    width = max(1, min(int(GAN_CHUNK_SIZE), int(steps)))

    def draws(k):
        """Batches, latent codes and interpolation weights of ``k`` generator steps,
        drawn in the order of a step-by-step loop, padded to ``width`` steps."""
        idx = np.zeros((width, n_crit + 1, batch_size), "int32")
        z = np.zeros((width, n_crit + 1, batch_size, latent_dim), "float32")
        eps = np.zeros((width, max(n_crit, 1), batch_size, 1, 1, 1), "float32")

        def batch_and_codes(i, j):  # a critic step's (j < n_crit) or the generator's
            idx[i, j] = rng.integers(0, len(X), batch_size)
            z[i, j] = rng.standard_normal((batch_size, latent_dim))
            if n_cond:  # the fake images' classes, one-hot in the last inputs
                classes = rng.integers(0, n_cond, batch_size)
                z[i, j, :, latent_dim - n_cond :] = np.eye(n_cond, dtype="float32")[classes]

        for i in range(k):
            for j in range(n_crit):
                batch_and_codes(i, j)
                eps[i, j] = rng.uniform(size=(batch_size, 1, 1, 1))
            batch_and_codes(i, n_crit)
        return tuple(ops.convert_to_tensor(a) for a in (idx, z, eps))

    history = {"d_loss": [], "g_loss": [], "steps": 0, "interrupted": False}
    bar = keras.utils.Progbar(steps, unit_name="step") if verbose and steps else None
    if verbose:
        print(desc, flush=True)
    done = 0
    try:
        while done < int(steps):
            k = min(width, int(steps) - done)
            if queries is not None and queries.query_budget is not None:
                allowed = (queries.query_budget - queries.n_queries_) // batch_size
                if allowed < 1:
                    queries.record_queries(batch_size)  # raises the budget's own error
                k = min(k, int(allowed))
            n_run, state, d_curve, g_curve = chunk_c(
                state, X_t, extra_t, draws(k), ops.convert_to_tensor(k, "int32")
            )
            n_run = int(ops.convert_to_numpy(n_run))
            if queries is not None:
                queries.record_queries(n_run * batch_size)
            d_curve, g_curve = ops.convert_to_numpy(d_curve), ops.convert_to_numpy(g_curve)
            for i in range(n_run):  # the losses every 10 generator steps, and the last
                step = done + i
                if step % 10 == 0 or step == steps - 1:
                    history["d_loss"].append(float(d_curve[i]))
                    history["g_loss"].append(float(g_curve[i]))
            done += n_run
            history["steps"] = done
            if bar is not None and history["d_loss"]:
                bar.update(
                    done, [("d_loss", history["d_loss"][-1]), ("g_loss", history["g_loss"][-1])]
                )
    except KeyboardInterrupt:
        history["interrupted"] = True
        warnings.warn(
            f"GAN training interrupted after {history['steps']} of {steps} steps; keeping "
            "the weights reached so far.",
            RuntimeWarning,
            stacklevel=2,
        )
    g_tv, g_ntv, g_ov, d_tv, d_ov = state
    for variables, vals in (
        (generator.trainable_variables, g_tv),
        (generator.non_trainable_variables, g_ntv),
        (critic.trainable_variables, d_tv),
        (critic.non_trainable_variables, d_ntv),
    ):
        for var, val in zip(variables, vals):
            var.assign(val)
    return history


def generate(generator, z, batch_size=256):
    """Images of ``generator`` for latent codes ``z``, in batches, as NumPy."""
    outs = []
    for start in range(0, len(z), batch_size):
        out = generator(z[start : start + batch_size], training=False)
        outs.append(ops.convert_to_numpy(out))
    return np.concatenate(outs).astype("float32")


class GANPriorMixin:
    """Fit or accept the GAN prior: one WGAN-GP loop (:func:`train_gan`) for every attack."""

    uses_gan_prior = True
    needs_public_data = True

    def _prior_input_shape(self, X):
        """The images' shape: the Keras target's input, else ``X``'s, else the
        generator's output (the attacks that take any target, even a callable)."""
        from kmi.attacks.image._common import model_input_shape

        if self.target_.kind == "keras":
            return model_input_shape(self.target_.model)
        if X is not None:
            return check_images(X).shape[1:]
        if self.generator is not None:
            return tuple(int(s) for s in self.generator.outputs[0].shape[1:])
        raise ValueError(
            f"{type(self).__name__} needs public images X or a generator. Received: X=None"
        )

    def _fit_prior(
        self,
        X,
        input_shape,
        rng,
        *,
        need_critic=True,
        n_classes=None,
        losses=None,
        extra=None,
        queries=None,
        conditional=False,
    ):
        """Train (or take) the generator and critic; set ``generator_``, ``critic_``.

        ``conditional``: a class-conditional GAN over ``n_classes`` classes (the
        generator's last ``n_classes`` inputs are a one-hot class, ``extra`` holds
        the classes of ``X``); ``latent_dim_`` is then the length of the code alone.
        """
        from kmi.models.image import dcgan_critic, dcgan_generator

        if self.generator is not None:
            if need_critic and self.critic is None:
                raise ValueError(
                    f"{type(self).__name__} needs the critic with the generator (its prior "
                    "loss); pass both, or neither to train them on X. Received: critic=None"
                )
            generator, critic = self.generator, self.critic
            pixel_range = getattr(self, "pixel_range_", UNIT)
            # a generator of the target's pixel range, put in [0, 1] where the attack
            # works (not another attack's generator_, which makes [0, 1] already)
            if pixel_range != UNIT and not getattr(generator, "_kmi_unit_range", False):
                generator = unit_output(generator, pixel_range)
                critic = None if critic is None else unit_input(critic, pixel_range)
            self.gan_history_ = None
        else:
            if X is None:
                raise ValueError(
                    f"{type(self).__name__}.fit needs public images X to train the GAN prior, "
                    "or a trained generator (and critic). Received: X=None"
                )
            X = check_images(X, input_shape)
            g_seed, d_seed = seeds(rng, 2)
            inputs = int(self.latent_dim) + (int(n_classes) if conditional else 0)
            generator = dcgan_generator(inputs, input_shape, width=self.gan_width, seed=g_seed)
            critic = dcgan_critic(
                input_shape, width=self.gan_width, n_classes=n_classes, seed=d_seed
            )
            d_loss, g_loss = losses if losses is not None else wgan_gp_losses()
            self.gan_history_ = train_gan(
                generator,
                critic,
                X,
                d_loss=d_loss,
                g_loss=g_loss,
                extra=extra,
                steps=int(self.gan_steps),
                batch_size=int(self.gan_batch_size),
                learning_rate=float(self.gan_learning_rate),
                rng=rng,
                queries=queries,
                conditional_classes=n_classes if conditional else None,
                verbose=self.verbose,
                desc=f"{type(self).__name__}: training the GAN prior",
            )
        out_shape = tuple(int(s) for s in generator.outputs[0].shape[1:])
        if out_shape != tuple(input_shape):
            raise ValueError(
                f"The generator makes images of shape {out_shape} but the target takes "
                f"{tuple(input_shape)}. Received: generator output shape={out_shape}"
            )
        generator._kmi_unit_range = True  # it makes images in [0, 1]
        self.generator_, self.critic_ = generator, critic
        self.latent_dim_ = int(generator.inputs[0].shape[-1]) - (
            int(n_classes) if conditional else 0
        )
        if self.latent_dim_ < 1:
            raise ValueError(
                f"A conditional generator takes a code and a one-hot class of "
                f"{n_classes}: it needs more than {n_classes} inputs. Received: generator "
                f"inputs={int(generator.inputs[0].shape[-1])}"
            )
