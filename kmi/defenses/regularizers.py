"""BiDO: bilateral dependency optimisation (Peng et al. 2022).

BiDO trains a classifier whose hidden representations depend little on the input
(``lambda_x`` term, limiting what an inversion attack can recover) and much on the
label (``lambda_y`` term, keeping accuracy). Dependence is measured with the
Hilbert-Schmidt independence criterion (normalised, as in the authors' code) or the
constrained covariance (COCO), on Gaussian kernels of the inputs and features and a
linear kernel of the one-hot labels. The functions here are written with ``keras.ops``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from numpy.typing import ArrayLike

__all__ = ["BiDO", "coco", "hsic"]

MEASURES = ("hsic", "coco")


def _flatten(x):
    x = ops.convert_to_tensor(x, dtype="float32")
    size = 1
    for d in x.shape[1:]:
        size *= int(d)
    return ops.reshape(x, (-1, size))


def _gaussian_kernel(x, sigma):
    x = _flatten(x)
    sq = ops.sum(ops.square(x), axis=1)
    dist = ops.maximum(sq[:, None] - 2.0 * ops.matmul(x, ops.transpose(x)) + sq[None, :], 0.0)
    return ops.exp(-dist / (2.0 * sigma**2 * x.shape[1]))


def _linear_kernel(x):
    x = _flatten(x)
    return ops.matmul(x, ops.transpose(x))


def _kernel(x, kernel, sigma):
    if kernel == "gaussian":
        return _gaussian_kernel(x, sigma)
    if kernel == "linear":
        return _linear_kernel(x)
    raise ValueError(f"kernel must be 'gaussian' or 'linear'. Received: kernel={kernel!r}")


def _centering(m, dtype):
    return ops.eye(m, dtype=dtype) - ops.ones((m, m), dtype=dtype) / ops.cast(m, dtype)


def hsic(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: float = 5.0,
    x_kernel: str = "gaussian",
    y_kernel: str = "gaussian",
    epsilon: float = 1e-5,
) -> Any:
    """Normalised HSIC between two batches, as in the BiDO reference code.

    ``sum(Rx * Ry^T)`` with ``R = Kc (Kc + epsilon m I)^-1`` and ``Kc = K H`` the
    kernel matrix centred on one side (``H = I - 1/m``). The result grows with the
    dependence between ``x`` and ``y``.

    Parameters
    ----------
    x, y : tensor of shape (m, ...)
        Two views of the same ``m`` examples (flattened per example).
    sigma : float, default=5.0
        Width of the Gaussian kernels, scaled by the square root of the
        dimension: ``exp(-||a - b||^2 / (2 sigma^2 d))``.
    x_kernel : {"gaussian", "linear"}, default="gaussian"
        Kernel on ``x``.
    y_kernel : {"gaussian", "linear"}, default="gaussian"
        Kernel on ``y``.
    epsilon : float, default=1e-5
        Regulariser of the inverses.

    Returns
    -------
    scalar tensor
        The normalised HSIC, float32.

    Raises
    ------
    ValueError
        If a kernel is neither ``"gaussian"`` nor ``"linear"``.

    See Also
    --------
    coco : the constrained covariance, BiDO's other dependence measure.
    BiDO : trains a model with these terms.

    References
    ----------
    Peng, Liu, Zhang, Yang, Gong and Han, "Bilateral Dependency Optimization:
    Defending Against Model-inversion Attacks", KDD 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import hsic
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 4)).astype("float32")
    >>> noise = rng.normal(size=(16, 4)).astype("float32")
    >>> labels = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]  # one-hot, from x
    >>> depends = float(hsic(x, labels, y_kernel="linear"))
    >>> depends > float(hsic(noise, labels, y_kernel="linear"))
    True
    """
    kx, ky = _kernel(x, x_kernel, sigma), _kernel(y, y_kernel, sigma)
    m = kx.shape[0] if kx.shape[0] is not None else ops.shape(kx)[0]
    h = _centering(m, kx.dtype)
    eye = ops.eye(m, dtype=kx.dtype)
    kxc, kyc = ops.matmul(kx, h), ops.matmul(ky, h)
    ridge = epsilon * ops.cast(m, kx.dtype) * eye
    rx = ops.matmul(kxc, ops.inv(kxc + ridge))
    ry = ops.matmul(kyc, ops.inv(kyc + ridge))
    return ops.sum(rx * ops.transpose(ry))


def coco(
    x: ArrayLike,
    y: ArrayLike,
    *,
    sigma: float = 5.0,
    x_kernel: str = "gaussian",
    y_kernel: str = "gaussian",
) -> Any:
    """Constrained covariance (COCO) between two batches, as in the BiDO code.

    ``sqrt(||Kc Lc||_F) / m`` with ``Kc = H K H`` and ``Lc = H L H`` the doubly
    centred kernel matrices.

    Parameters
    ----------
    x, y : tensor of shape (m, ...)
        Two views of the same ``m`` examples (flattened per example).
    sigma : float, default=5.0
        Width of the Gaussian kernels, as in :func:`hsic`.
    x_kernel : {"gaussian", "linear"}, default="gaussian"
        Kernel on ``x``.
    y_kernel : {"gaussian", "linear"}, default="gaussian"
        Kernel on ``y``.

    Returns
    -------
    scalar tensor
        The constrained covariance, float32; it grows with the dependence.

    Raises
    ------
    ValueError
        If a kernel is neither ``"gaussian"`` nor ``"linear"``.

    See Also
    --------
    hsic : BiDO's default dependence measure.
    BiDO : trains a model with these terms.

    References
    ----------
    Peng, Liu, Zhang, Yang, Gong and Han, "Bilateral Dependency Optimization:
    Defending Against Model-inversion Attacks", KDD 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import coco
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(16, 4)).astype("float32")
    >>> noise = rng.normal(size=(16, 4)).astype("float32")
    >>> labels = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]  # one-hot, from x
    >>> depends = float(coco(x, labels, y_kernel="linear"))
    >>> depends > float(coco(noise, labels, y_kernel="linear"))
    True
    """
    kx, ky = _kernel(x, x_kernel, sigma), _kernel(y, y_kernel, sigma)
    m = kx.shape[0] if kx.shape[0] is not None else ops.shape(kx)[0]
    h = _centering(m, kx.dtype)
    kxc = ops.matmul(h, ops.matmul(kx, h))
    kyc = ops.matmul(h, ops.matmul(ky, h))
    product = ops.matmul(kxc, kyc)
    return ops.sqrt(ops.sqrt(ops.sum(ops.square(product)))) / ops.cast(m, kx.dtype)


@keras.saving.register_keras_serializable(package="kmi")
class BiDO(keras.Model):
    """Train an existing functional model with BiDO's dependency terms.

    Wraps ``model``: calling the wrapper returns ``model``'s output, and its
    :meth:`compute_loss` adds, for every named hidden layer with features ``Z``,
    ``lambda_x * D(X, Z) - lambda_y * D(Z, Y)`` to the compiled loss, where ``D``
    is :func:`hsic` or :func:`coco`, ``X`` the flattened inputs and ``Y`` the
    one-hot labels (linear kernel). Compile and ``fit`` the wrapper as usual; the
    wrapped model shares its weights and is what you serve. The terms are also
    reported as the metrics ``bido_x`` and ``bido_y``.

    Parameters
    ----------
    model : keras.Model
        A functional (or Sequential) classifier with a single input and output.
    hidden_layers : list of str
        Names of the layers whose outputs are regularised.
    measure : {"hsic", "coco"}, default="hsic"
        The dependence measure ``D``.
    lambda_x : float, default=0.05
        Weight of the input-feature dependence (minimised).
    lambda_y : float, default=0.5
        Weight of the feature-label dependence (maximised).
        The defaults are the paper's for HSIC; the paper tunes both per data set.
    sigma : float, default=5.0
        Width of the Gaussian kernels (the reference code's value).
    **kwargs
        Standard model arguments.

    Attributes
    ----------
    model : keras.Model
        The wrapped model.

    Raises
    ------
    ValueError
        If ``measure`` is unknown, ``hidden_layers`` is empty or names a layer
        ``model`` does not have, or ``model`` has more than one input or output.

    See Also
    --------
    hsic, coco : the dependence measures.
    InformationBottleneck : MID, another training-time defense.

    Notes
    -----
    The terms are computed on the whole batch, so BiDO cannot be combined with
    per-example DP-SGD (:class:`~kmi.defenses.DPSGD` refuses it).

    References
    ----------
    Peng, Liu, Zhang, Yang, Gong and Han, "Bilateral Dependency Optimization:
    Defending Against Model-inversion Attacks", KDD 2022.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import BiDO
    >>> inputs = keras.Input((6,))
    >>> hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    >>> net = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    >>> bido = BiDO(net, ["hidden"])
    >>> bido.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x, y = np.random.default_rng(0).normal(size=(16, 6)), np.arange(16) % 3
    >>> sorted(bido.fit(x, y, batch_size=8, verbose=0).history)
    ['bido_x', 'bido_y', 'loss']
    >>> net.predict(x, verbose=0).shape  # the wrapped model is what you serve
    (16, 3)
    """

    _kmi_batch_level_loss = True

    def __init__(
        self,
        model: keras.Model,
        hidden_layers: str | list[str],
        measure: str = "hsic",
        lambda_x: float = 0.05,
        lambda_y: float = 0.5,
        sigma: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}. Received: measure={measure!r}")
        if isinstance(hidden_layers, str):
            hidden_layers = [hidden_layers]
        hidden_layers = list(hidden_layers)
        if not hidden_layers:
            raise ValueError("BiDO needs at least one hidden layer. Received: hidden_layers=[]")
        names = [layer.name for layer in model.layers]
        missing = [name for name in hidden_layers if name not in names]
        if missing:
            raise ValueError(
                f"hidden_layers must name layers of the model (layers: {names}). "
                f"Received: hidden_layers={missing!r}"
            )
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "BiDO wraps a model with one input and one output. "
                f"Received: {len(model.inputs)} inputs, {len(model.outputs)} outputs"
            )
        self.model = model
        self.hidden_layers = hidden_layers
        self.measure = measure
        self.lambda_x = float(lambda_x)
        self.lambda_y = float(lambda_y)
        self.sigma = float(sigma)
        self._features = keras.Model(
            model.inputs[0],
            [model.outputs[0], *[model.get_layer(name).output for name in hidden_layers]],
        )
        self._hidden = None
        self.bido_x_tracker = keras.metrics.Mean(name="bido_x")
        self.bido_y_tracker = keras.metrics.Mean(name="bido_y")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        outputs = self._features(inputs, training=training)
        # compute_loss runs right after call, in the same trace, on every backend
        self._hidden = outputs[1:]
        return outputs[0]

    def dependence(self, x: Any, y: Any, hidden: list) -> tuple[Any, Any]:
        """BiDO's two dependence terms for one batch.

        Parameters
        ----------
        x : tensor of shape (m, ...)
            The inputs.
        y : tensor of shape (m,) or (m, n_classes)
            Class indices or one-hot labels.
        hidden : list of tensor
            The features ``Z_l`` of the regularised layers for ``x``.

        Returns
        -------
        dep_x : scalar tensor
            ``sum_l D(X, Z_l)``, minimised with weight ``lambda_x``.
        dep_y : scalar tensor
            ``sum_l D(Z_l, Y)``, maximised with weight ``lambda_y``.
        """
        measure = hsic if self.measure == "hsic" else coco
        n_classes = self.model.outputs[0].shape[-1]
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 1 or (len(y.shape) == 2 and y.shape[-1] == 1 and n_classes != 1):
            y = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), n_classes)
        dep_x = dep_y = 0.0
        for z in hidden:
            dep_x = dep_x + measure(z, x, sigma=self.sigma)
            dep_y = dep_y + measure(z, y, sigma=self.sigma, y_kernel="linear")
        return dep_x, dep_y

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """The compiled loss plus ``lambda_x * D(X, Z) - lambda_y * D(Z, Y)``.

        The dependence terms need the labels: without ``y`` the compiled loss
        alone is returned. They also update the ``bido_x`` and ``bido_y`` metrics.
        """
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if y is None:
            return loss
        hidden = self._hidden
        if hidden is None:
            hidden = self._features(x, training=training)[1:]
        dep_x, dep_y = self.dependence(x, y, hidden)
        self.bido_x_tracker.update_state(dep_x)
        self.bido_y_tracker.update_state(dep_y)
        return loss + self.lambda_x * dep_x - self.lambda_y * dep_y

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "hidden_layers": self.hidden_layers,
            "measure": self.measure,
            "lambda_x": self.lambda_x,
            "lambda_y": self.lambda_y,
            "sigma": self.sigma,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BiDO:
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
