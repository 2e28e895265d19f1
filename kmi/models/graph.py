"""Graph convolutional networks written with ``keras.ops`` (TensorFlow and JAX).

:class:`GCNConv` is the graph convolution of Kipf and Welling (2017); :func:`gcn`
builds their two-layer node classifier, whose inputs are ``(features, adjacency)``
with one row per node. :class:`GraphPredictor` serves such a model over a private
graph: it answers queries made of node features only, which is what a black-box
graph attack sees.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
from keras import ops
from numpy.typing import ArrayLike

from kmi.models._seeds import SeedStream
from kmi.utils.validation import check_adjacency, check_features

__all__ = ["GCNConv", "GraphPredictor", "gcn", "normalize_adjacency"]


def normalize_adjacency(
    adjacency: ArrayLike | sp.spmatrix, *, add_self_loops: bool = True
) -> np.ndarray | sp.csr_matrix:
    """Symmetric normalisation ``D^-1/2 (A + I) D^-1/2`` of an adjacency matrix.

    Computed in NumPy / SciPy, for models built with ``GCNConv(normalize=False)``
    and for checks; :class:`GCNConv` normalises on the fly by default. Nodes of
    degree 0 (without self-loops) get zero rows.

    Parameters
    ----------
    adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
        The graph; entries are edge weights.
    add_self_loops : bool, default=True
        Normalise ``A + I`` rather than ``A``.

    Returns
    -------
    ndarray or scipy.sparse CSR matrix (as the input), float32.

    Raises
    ------
    ValueError
        If ``adjacency`` is not a non-empty square matrix or holds NaN or inf
        (:func:`kmi.utils.validation.check_adjacency`).

    References
    ----------
    T. N. Kipf and M. Welling. "Semi-Supervised Classification with Graph
    Convolutional Networks." ICLR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import normalize_adjacency
    >>> a = np.array([[0, 1], [1, 0]])
    >>> normalize_adjacency(a).round(3).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    adjacency = check_adjacency(adjacency)
    n = adjacency.shape[0]
    if sp.issparse(adjacency):
        a = sp.csr_matrix(adjacency, dtype=np.float32)
        if add_self_loops:
            a = a + sp.eye(n, dtype=np.float32, format="csr")
        deg = np.asarray(a.sum(axis=1)).ravel()
        dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
        return sp.diags(dinv) @ a @ sp.diags(dinv)
    a = adjacency + np.eye(n, dtype=np.float32) if add_self_loops else adjacency
    deg = a.sum(axis=1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    return (dinv[:, None] * a * dinv[None, :]).astype(np.float32)


@keras.saving.register_keras_serializable(package="kmi")
class GCNConv(keras.layers.Layer):
    """Graph convolution ``activation(D^-1/2 (A + I) D^-1/2 X W + b)`` (Kipf and Welling 2017).

    The layer is called on ``[features, adjacency]``: ``features`` of shape
    (n_nodes, n_features) and ``adjacency`` of shape (n_nodes, n_nodes), dense or
    sparse (a ``tf.SparseTensor`` on TensorFlow, a ``jax.experimental.sparse.BCOO``
    on JAX; Keras makes them from a scipy.sparse matrix in ``fit`` and ``predict``
    when the model's adjacency input is ``keras.Input(..., sparse=True)``). The
    normalisation is computed on the fly from the adjacency with matrix products
    only, so it is differentiable with respect to a dense adjacency (as
    :class:`kmi.attacks.GraphMI` needs) and never builds a dense matrix from a
    sparse one.

    Parameters
    ----------
    units : int
        Output features per node.
    activation : str or callable, default=None
    use_bias : bool, default=True
    add_self_loops : bool, default=True
        Propagate over ``A + I`` (each node keeps its own features).
    normalize : bool, default=True
        Apply the symmetric degree normalisation. With ``False`` the adjacency is
        used as given (pass a matrix from :func:`normalize_adjacency`) and
        ``add_self_loops`` still adds ``X W`` once.
    kernel_initializer : str or initializer, default="glorot_uniform"
        Initializer of the kernel; give it a seed
        (``keras.initializers.GlorotUniform(seed=0)``) for reproducible weights.
    bias_initializer : str or initializer, default="zeros"
    kernel_regularizer, bias_regularizer : str or regularizer, default=None
    **kwargs
        Passed to :class:`keras.layers.Layer`.

    Raises
    ------
    ValueError
        If ``units`` is not a positive integer, or when called on anything but two
        inputs: a rank-2 feature matrix and a square adjacency with one row per node.

    References
    ----------
    T. N. Kipf and M. Welling. "Semi-Supervised Classification with Graph
    Convolutional Networks." ICLR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import GCNConv
    >>> x = np.eye(3, dtype="float32")
    >>> a = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype="float32")
    >>> layer = GCNConv(2, kernel_initializer="ones", use_bias=False)
    >>> np.round(np.asarray(layer([x, a])), 3).tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """

    def __init__(
        self,
        units: int,
        activation: str | Any | None = None,
        use_bias: bool = True,
        add_self_loops: bool = True,
        normalize: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int | np.integer) or isinstance(units, bool) or units < 1:
            raise ValueError(f"units must be a positive integer. Received: units={units!r}")
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.add_self_loops = bool(add_self_loops)
        self.normalize = bool(normalize)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.supports_masking = False

    def _check_input_shapes(self, input_shape):
        if not isinstance(input_shape, list | tuple) or len(input_shape) != 2:
            raise ValueError(
                f"GCNConv is called on [features, adjacency]. Received: input_shape={input_shape}"
            )
        x_shape, a_shape = (tuple(s) for s in input_shape)
        if len(x_shape) != 2 or len(a_shape) != 2:
            raise ValueError(
                "GCNConv needs features of shape (n_nodes, n_features) and an adjacency of "
                f"shape (n_nodes, n_nodes). Received: features shape={x_shape}, "
                f"adjacency shape={a_shape}"
            )
        n_x, (n_a, m_a) = x_shape[0], a_shape
        if n_a is not None and m_a is not None and n_a != m_a:
            raise ValueError(f"The adjacency must be square. Received: adjacency shape={a_shape}")
        known = [d for d in (n_x, n_a, m_a) if d is not None]
        if len(set(known)) > 1:
            raise ValueError(
                "features and adjacency must have one row per node. Received: features "
                f"shape={x_shape}, adjacency shape={a_shape}"
            )
        return x_shape, a_shape

    def build(self, input_shape: list[tuple]) -> None:
        """Create the kernel (and bias) for ``[features shape, adjacency shape]``."""
        x_shape, _ = self._check_input_shapes(input_shape)
        if x_shape[-1] is None:
            raise ValueError(
                f"GCNConv needs a known number of features. Received: features shape={x_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(x_shape[-1], self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None

    def propagate(self, h: Any, adjacency: Any) -> Any:
        """``D^-1/2 (A + I) D^-1/2 h`` (or ``A h (+ h)`` without normalisation).

        Parameters
        ----------
        h : tensor of shape (n_nodes, d)
            Node states.
        adjacency : tensor of shape (n_nodes, n_nodes), dense or sparse

        Returns
        -------
        tensor of shape (n_nodes, d)
        """
        if not self.normalize:
            out = ops.matmul(adjacency, h)
            return out + h if self.add_self_loops else out
        ones = ops.ones((ops.shape(h)[0], 1), dtype=h.dtype)
        degree = ops.matmul(adjacency, ones)
        if self.add_self_loops:
            degree = degree + 1.0
        safe = ops.where(degree > 0, degree, ops.ones_like(degree))
        dinv = ops.where(degree > 0, ops.rsqrt(safe), ops.zeros_like(degree))
        h = dinv * h
        out = ops.matmul(adjacency, h)
        if self.add_self_loops:
            out = out + h
        return dinv * out

    def call(self, inputs: list) -> Any:
        """``activation(propagate(features @ kernel) + bias)`` of ``[features, adjacency]``."""
        x, adjacency = inputs
        h = ops.matmul(x, self.kernel)
        out = self.propagate(h, adjacency)
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out)

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        """``(n_nodes, units)``."""
        x_shape, _ = self._check_input_shapes(input_shape)
        return (x_shape[0], self.units)

    def get_config(self) -> dict:
        """The layer's arguments, for ``from_config`` and ``model.save``."""
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "add_self_loops": self.add_self_loops,
            "normalize": self.normalize,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }


def gcn(
    n_features: int,
    n_classes: int,
    *,
    hidden_units: int = 16,
    dropout: float = 0.5,
    l2: float = 2.5e-4,
    sparse: bool = False,
    name: str = "gcn",
    seed: int | None = None,
) -> keras.Model:
    """The two-layer GCN node classifier of Kipf and Welling (2017).

    ``softmax(Â · dropout(relu(Â · dropout(X) W1 + b1)) W2 + b2)`` with ``Â`` the
    normalised adjacency with self-loops. The model's inputs are ``[features,
    adjacency]`` (one row per node: train it full-batch with ``batch_size=n_nodes`` and
    ``shuffle=False``, masking the loss with ``sample_weight``); it outputs class
    probabilities.

    Parameters
    ----------
    n_features : int
        Features per node.
    n_classes : int
        Number of classes.
    hidden_units : int, default=16
        Width of the hidden layer.
    dropout : float, default=0.5
        Dropout rate on the input of each layer.
    l2 : float, default=2.5e-4
        L2 penalty on the first layer's kernel (Keras' ``L2(l)`` adds
        ``l * sum(w ** 2)``; this is Kipf and Welling's weight decay of 5e-4 on
        ``sum(w ** 2) / 2``).
    sparse : bool, default=False
        Make the adjacency input sparse (pass a scipy.sparse matrix to ``fit`` and
        ``predict``). A dense adjacency is what :class:`kmi.attacks.GraphMI`
        differentiates; both give the same predictions.
    name : str, default="gcn"
        Name of the model.
    seed : int, default=None
        Seeds the kernels' initialisation and the two dropout layers, each with a seed
        of its own derived from it; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model
        Uncompiled; inputs ``features`` (n_nodes, n_features) and ``adjacency``
        (n_nodes, n_nodes).

    Raises
    ------
    ValueError
        On non-positive sizes, a dropout rate outside [0, 1) or a bad ``seed``.

    Notes
    -----
    Kipf and Welling's recipe, with which it reaches 80-82% test accuracy on Cora on
    both backends (they report 81.5%; ``benchmarks/graph_cora.py``): features divided
    by their row sums (``load_planetoid(..., row_normalize=True)``; on Cora's raw
    binary features it stays near 79%), Adam with learning rate 0.01, at most 200
    full-batch epochs, and early stopping on the validation loss with a window of 10.
    Their layers have no bias; these have one, as in PyTorch Geometric's ``GCNConv``.

    References
    ----------
    T. N. Kipf and M. Welling. "Semi-Supervised Classification with Graph
    Convolutional Networks." ICLR 2017.

    Examples
    --------
    >>> from kmi.models import gcn
    >>> model = gcn(1433, 7, seed=0)
    >>> [tuple(t.shape) for t in model.inputs], tuple(model.outputs[0].shape)
    ([(None, 1433), (None, None)], (None, 7))
    """
    for arg, value in (
        ("n_features", n_features),
        ("n_classes", n_classes),
        ("hidden_units", hidden_units),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    seeds = SeedStream(seed)
    features = keras.Input(shape=(int(n_features),), name="features")
    adjacency = keras.Input(shape=(None,), sparse=bool(sparse), name="adjacency")
    h = keras.layers.Dropout(dropout, seed=seeds.next(), name="dropout_1")(features)
    h = GCNConv(
        hidden_units,
        activation="relu",
        kernel_initializer=seeds.initializer(),
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        name="gcn_conv_1",
    )([h, adjacency])
    h = keras.layers.Dropout(dropout, seed=seeds.next(), name="dropout_2")(h)
    out = GCNConv(
        n_classes, activation="softmax", kernel_initializer=seeds.initializer(), name="gcn_conv_2"
    )([h, adjacency])
    return keras.Model([features, adjacency], out, name=name)


class GraphPredictor:
    """A node classifier served over a private graph: queries carry node features only.

    A black-box graph attack (link stealing, LinkTeller) sends node features to an
    API that runs the model over a graph it keeps to itself. This callable is that
    API: ``predictor(features)`` returns the model's output for every node, with
    ``adjacency`` bound. Wrap it with :class:`kmi.targets.Target` (it is a callable,
    so the target is black-box unless you say otherwise); white-box attacks reach
    the model through :attr:`model`.

    Parameters
    ----------
    model : keras.Model
        A model whose inputs are ``[features, adjacency]``, e.g. from :func:`gcn`.
    adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
        The private graph.

    Raises
    ------
    ValueError
        If the adjacency is not square or holds NaN, or when a query is not a finite
        feature matrix with one row per node
        (:func:`kmi.utils.validation.check_features`).

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import GraphPredictor, gcn
    >>> from kmi.targets import Target
    >>> a = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype="float32")
    >>> target = Target(GraphPredictor(gcn(4, 2), a))
    >>> target.query(np.ones((3, 4), dtype="float32")).shape, target.access
    ((3, 2), 'black-box')
    """

    def __init__(self, model: keras.Model, adjacency: ArrayLike | sp.spmatrix) -> None:
        self.model = model
        self.adjacency = check_adjacency(adjacency)
        self.n_nodes = int(self.adjacency.shape[0])
        self._forward = None  # compiled on the first dense query
        self._dense = None

    def __call__(self, features: ArrayLike) -> np.ndarray:
        """The model's output for every node, given every node's features.

        Parameters
        ----------
        features : array-like of shape (n_nodes, n_features)

        Returns
        -------
        ndarray of shape (n_nodes, n_outputs)
        """
        features = check_features(features, name="features")
        if features.shape[0] != self.n_nodes:
            raise ValueError(
                f"A query must give the features of all {self.n_nodes} nodes of the graph, in "
                "one call (wrap the predictor with Target(..., batch_size=None) for graphs "
                f"larger than the default batch). Received: features shape={features.shape}"
            )
        if sp.issparse(self.adjacency):
            # Keras turns a scipy.sparse matrix into the backend's sparse tensor.
            out = self.model.predict(
                [features, self.adjacency], batch_size=self.n_nodes, verbose=0
            )
        else:
            if self._forward is None:
                from kmi import backend

                model = self.model
                self._forward = backend.jit(lambda x, a: model([x, a], training=False))
                self._dense = ops.convert_to_tensor(self.adjacency)
            out = self._forward(ops.convert_to_tensor(features), self._dense)
        return ops.convert_to_numpy(out)

    def __repr__(self) -> str:
        return f"GraphPredictor({self.model.name!r}, n_nodes={self.n_nodes})"
