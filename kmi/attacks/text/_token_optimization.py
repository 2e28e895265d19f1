"""TokenOptimization: recover a secret by optimising relaxed tokens (Parikh et al. 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Self

import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks._optim import minimize
from kmi.attacks.text import _common as _text
from kmi.attacks.text._common import PARAMS_DOC, model_length
from kmi.base import BaseAttack
from kmi.models.text import SPECIAL_TOKENS
from kmi.utils.validation import check_texts


@fill_doc(**PARAMS_DOC)
class TokenOptimization(BaseAttack):
    """Recover the secret tokens after a known prefix by optimising relaxed tokens.

    White-box: the secret's tokens are relaxed to distributions ``softmax((z + g) /
    tau)`` over the vocabulary (Gumbel-softmax: ``g`` is Gumbel noise, ``tau`` anneals
    from ``temperature`` to ``final_temperature``), embedded through the model's
    token embedding matrix, and ``z`` is optimised by Adam to minimise the model's
    loss: the cross-entropy of the known label for a classifier (Parikh et al.
    2022's canary extraction from NLU models), or the negative log-likelihood of the
    secret after the prefix for a language model. Each restart is decoded by argmax
    and the restarts are ranked by the model's loss on the decoded tokens. Every
    prefix and restart is optimised at once, in one batch
    (:func:`kmi.attacks._optim.minimize`).

    Parameters
    ----------
    target : Target or keras.Model
        A kmi text model (:class:`kmi.models.TextClassifier` or
        :class:`kmi.models.CausalLM`), or any Keras model with ``embed_probabilities``
        and ``call_embedded`` and a ``sequence_length``.
    tokenizer : keras-hub tokenizer
        The model's tokenizer.
    n_tokens : int, default=8
        Length of the secret, in tokens.
    allowed_tokens : str or list, default=None
        Tokens the secret may hold: a string whose characters are the allowed byte
        tokens (``"0123456789-"``), or a list of token strings or ids; ``None``
        allows every token but padding (and the special tokens of a word vocabulary).
    n_restarts : int, default=8
        Random starts per prefix.
    max_iter : int, default=300
    learning_rate : float, default=0.3
    temperature : float, default=1.0
        Initial Gumbel-softmax temperature.
    final_temperature : float, default=0.1
    gumbel : bool, default=True
        Add Gumbel noise (else plain softmax relaxation).
    {random_state}
    {verbose}

    Attributes
    ----------
    target_ : Target
    sequence_length_ : int
    allowed_ids_ : ndarray
        Token ids the secret may hold.
    task_ : {"classifier", "language-model"}
    candidates_ : list of list of (str, float)
        After :meth:`invert`: per prefix, every restart's decoded secret and its
        loss, best first.
    secret_ids_ : list of ndarray
        After :meth:`invert`: the best secret's token ids, per prefix.
    n_iter_ : int

    Raises
    ------
    AccessError
        In ``fit``, for a target that is not white-box.
    TypeError
        In ``fit``, for a model without an embedding path.

    See Also
    --------
    LMExtraction : Black-box extraction by generation.

    References
    ----------
    R. Parikh, C. Dupuy and R. Gupta. Canary Extraction in Natural Language
    Understanding Models. ACL 2022.
    C. Song and A. Raghunathan. Information Leakage in Embedding Models. CCS 2020.
    E. Jang, S. Gu and B. Poole. Categorical Reparameterization with Gumbel-Softmax.
    ICLR 2017.

    Examples
    --------
    >>> from kmi.attacks import TokenOptimization
    >>> from kmi.models import CausalLM, byte_tokenizer
    >>> lm = CausalLM(256, 12, embedding_dim=8, seed=0)
    >>> attack = TokenOptimization(lm, tokenizer=byte_tokenizer(12), n_tokens=3,
    ...                            allowed_tokens="0123456789", n_restarts=2,
    ...                            max_iter=3, random_state=0).fit()
    >>> secret = attack.invert(["pin "])[0]
    >>> len(secret), set(secret) <= set("0123456789")
    (3, True)
    """

    required_access = "white-box"
    level = "instance"
    _parameter_constraints = {
        "target": "no_validation",
        "tokenizer": [HasMethods(["detokenize"]), None],
        "n_tokens": [Interval(Integral, 1, None, closed="left")],
        "allowed_tokens": [str, "array-like", None],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "final_temperature": [Interval(Real, 0, None, closed="neither")],
        "gumbel": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        target=None,
        *,
        tokenizer=None,
        n_tokens=8,
        allowed_tokens=None,
        n_restarts=8,
        max_iter=300,
        learning_rate=0.3,
        temperature=1.0,
        final_temperature=0.1,
        gumbel=True,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.tokenizer = tokenizer
        self.n_tokens = n_tokens
        self.allowed_tokens = allowed_tokens
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.final_temperature = final_temperature
        self.gumbel = gumbel
        self.random_state = random_state
        self.verbose = verbose

    def _allowed(self, model):
        tok = self.tokenizer
        V = int(model.vocabulary_size)
        if self.allowed_tokens is None:
            vocab = tok.get_vocabulary() if hasattr(tok, "get_vocabulary") else None
            if isinstance(vocab, dict):  # ByteTokenizer: token -> id
                vocab = sorted(vocab, key=vocab.get)
            first = len(SPECIAL_TOKENS) if vocab and tuple(vocab[:4]) == SPECIAL_TOKENS else 1
            return np.arange(first, V)
        return _text.token_ids_of(tok, self.allowed_tokens, V)

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the target (white-box, with an embedding path), tokenizer and parameters.

        ``X`` and ``y`` are ignored (the attack needs no auxiliary data).
        """
        target = self.target_
        model = target.model
        if not (hasattr(model, "embed_probabilities") and hasattr(model, "call_embedded")):
            raise TypeError(
                "TokenOptimization feeds relaxed tokens through the model's embedding, so the "
                "model needs embed_probabilities and call_embedded (kmi.models.TextClassifier, "
                f"kmi.models.CausalLM). Received: model of type {type(model).__name__}"
            )
        _text.check_tokenizer(self.tokenizer, "TokenOptimization")
        self.sequence_length_ = model_length(target, "TokenOptimization")
        self.allowed_ids_ = self._allowed(model)
        target.record_queries(1)
        probe = model(np.ones((1, self.sequence_length_), dtype="int32"), training=False)
        self.task_ = "language-model" if len(ops.shape(probe)) == 3 else "classifier"
        self.n_outputs_ = int(ops.shape(probe)[-1])
        return self

    def _label_columns(self, y):
        if self.target_.classes_ is not None:
            return np.asarray(self.target_.label_index(y))
        ok = np.issubdtype(y.dtype, np.integer) and y.size and y.min() >= 0
        if not ok or y.max() >= self.n_outputs_:
            raise ValueError(
                f"y must hold output columns of the classifier, integers in [0, "
                f"{self.n_outputs_}) (or build the Target with classes=...). "
                f"Received: y={y[:5].tolist()!r}"
            )
        return y.astype(np.int64)

    def _layout(self, prefixes):
        """Fixed tokens, free-position mask and the secret's start, per row."""
        pre = _text.encode(self.tokenizer, prefixes, "prefixes")
        L, k = self.sequence_length_, int(self.n_tokens)
        for i, p in enumerate(pre):
            if len(p) + k > L:
                raise ValueError(
                    f"The prefix and the {k} secret tokens must fit the model's {L} tokens. "
                    f"Received: prefixes[{i}] of {len(p)} tokens"
                )
            if self.task_ == "language-model" and len(p) == 0:
                raise ValueError(
                    "A language model needs a non-empty prefix to predict the secret from. "
                    f"Received: prefixes[{i}]={prefixes[i]!r}"
                )
        return pre

    def invert(self, X: Sequence[str], y: ArrayLike | None = None) -> list[str]:
        """Recover the secret after each prefix.

        Parameters
        ----------
        X : list of str
            Known prefixes (the text before each secret), non-empty. A word outside
            the tokenizer's vocabulary raises ValueError (it would be unknown).
        y : array-like, default=None
            For a classifier, the label (output column) each full text has; ignored
            for a language model.

        Returns
        -------
        list of str
            The best decoded secret per prefix (its tokens detokenized).
        """
        check_is_fitted(self, "allowed_ids_")
        prefixes = check_texts(X, "X")
        model = self.target_.model
        if self.task_ == "classifier":
            if y is None:
                raise ValueError(
                    "A classifier target needs the label of each text: invert(X, y). "
                    "Received: y=None"
                )
            labels = self._label_columns(np.asarray(y).ravel())
            if len(labels) != len(prefixes):
                raise ValueError(
                    "y must hold one label per prefix. "
                    f"Received: len(X)={len(prefixes)}, len(y)={len(labels)}"
                )
        else:
            labels = np.zeros(len(prefixes), dtype=np.int64)
        pre = self._layout(prefixes)
        L, k, V = self.sequence_length_, int(self.n_tokens), int(model.vocabulary_size)
        R = int(self.n_restarts)
        n = len(pre) * R
        fixed = np.zeros((n, L), dtype="int32")
        free = np.zeros((n, L), dtype="float32")
        start = np.zeros(n, dtype=np.int64)
        for j, p in enumerate(pre):
            rows = slice(j * R, (j + 1) * R)
            fixed[rows, : len(p)] = p
            free[rows, len(p) : len(p) + k] = 1.0
            start[rows] = len(p)
        row_labels = np.repeat(labels, R)
        bias = np.full(V, -1e9, dtype="float32")
        bias[self.allowed_ids_] = 0.0
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        z0 = rng.normal(0.0, 0.1, size=(n, L, V)).astype("float32")
        lm = self.task_ == "language-model"
        t0, t1 = float(self.temperature), float(self.final_temperature)
        max_iter = int(self.max_iter)

        data = {  # the same at every step: arguments of the compiled program
            "fixed": fixed,
            "free": free,
            "bias": bias,
            "pad_mask": ((fixed != 0) | (free > 0)).astype("int32"),
            "labels": row_labels.astype("int32"),
        }

        def relaxed(z, aux):
            free_t = aux["free"][..., None]
            soft = ops.softmax((z + aux["bias"] + aux["noise"]) / aux["tau"], axis=-1)
            return free_t * soft + (1.0 - free_t) * ops.one_hot(aux["fixed"], V)

        def rows_loss(probs, aux):
            mask = ops.cast(aux["pad_mask"], "bool")
            out = model.call_embedded(model.embed_probabilities(probs), mask, training=False)
            if lm:
                logp = ops.log_softmax(out[:, :-1], axis=-1)
                nll = -ops.sum(probs[:, 1:] * logp, axis=-1)
                return ops.sum(nll * aux["free"][:, 1:], axis=-1) / float(k)
            return ops.sparse_categorical_crossentropy(aux["labels"], out, from_logits=True)

        def loss_fn(z, aux):
            return rows_loss(relaxed(z, aux), aux)

        def aux_fn(step, r):
            frac = step / max(max_iter - 1, 1)
            tau = t0 * (t1 / t0) ** frac
            if self.gumbel:
                noise = _text.gumbel_noise((n, L, V), r)
            else:
                noise = np.zeros((n, L, V), "float32")
            return {"noise": noise, "tau": np.float32(tau)}

        result = minimize(
            loss_fn,
            z0,
            max_iter=max_iter,
            learning_rate=float(self.learning_rate),
            optimizer="adam",
            keep_best=False,
            aux_fn=aux_fn,
            rng=rng,
            data=data,
            models=[model],
            program=("TokenOptimization", lm, k, V),
            queries=self.target_,
            verbose=self.verbose,
            desc="TokenOptimization",
        )
        self.n_iter_ = result.n_iter
        z = result.x + bias[None, None]
        hard = np.where(free > 0, np.argmax(z, axis=-1), fixed).astype("int32")
        self.target_.record_queries(n)
        tensors = {key: ops.convert_to_tensor(value) for key, value in data.items()}
        hard_oh = ops.one_hot(ops.convert_to_tensor(hard), V)
        final = ops.convert_to_numpy(rows_loss(hard_oh, tensors))
        self.candidates_ = []
        self.secret_ids_ = []
        best = []
        for j in range(len(pre)):
            rows = np.arange(j * R, (j + 1) * R)
            order = rows[np.argsort(final[rows], kind="stable")]
            found = [
                (_text.decode(self.tokenizer, hard[r, start[r] : start[r] + k]), float(final[r]))
                for r in order
            ]
            self.candidates_.append(found)
            self.secret_ids_.append(hard[order[0], start[order[0]] : start[order[0]] + k])
            best.append(found[0][0])
        return best

    def score(self, X: Sequence[str], y: ArrayLike | None = None) -> float:
        """Mean fraction of secret tokens recovered, position by position.

        Parameters
        ----------
        X : list of str
            Full texts known to the auditor; the last ``n_tokens`` tokens of each are
            the secret, the rest its prefix.
        y : array-like, default=None
            Labels of the texts (classifier targets).
        """
        texts = check_texts(X, "X")
        ids = _text.encode(self.tokenizer, texts, "X")
        k = int(self.n_tokens)
        for i, row in enumerate(ids):
            if len(row) <= k:
                raise ValueError(
                    f"Each text must be longer than the {k}-token secret. "
                    f"Received: X[{i}]={texts[i]!r}"
                )
        prefixes = [_text.decode(self.tokenizer, row[:-k]) for row in ids]
        secrets = [row[-k:] for row in ids]
        self.invert(prefixes, y)
        return float(np.mean([np.mean(s == g) for s, g in zip(secrets, self.secret_ids_)]))
