"""Model inversion of text models: recover training text, or the text behind an embedding.

- :class:`LMExtraction` (black-box): generate many samples from a language model
  and rank them by how memorised they look (Carlini et al. 2021);
- :class:`TokenOptimization` (white-box): optimise relaxed (Gumbel-softmax) tokens
  through the model's embedding matrix to recover a secret after a known prefix, for
  a known label of a classifier or under a language model (Parikh et al. 2022);
- :class:`EmbeddingInversion` (black-box, learned): train an inverter on embeddings of
  auxiliary texts queried from the target encoder, then turn embeddings back into
  texts: a bag-of-words head (Song and Raghunathan 2020) or a sequence decoder, with
  an optional correction step that re-embeds hypotheses and keeps the closest
  (after vec2text, Morris et al. 2023, at small scale).

Success is measured with :mod:`kmi.metrics.text` (word F1, BLEU, exact match,
exposure): each ``score`` returns one of them, greater is better.
"""

from __future__ import annotations

import numbers
import warnings

import keras
import numpy as np
from keras import ops
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from kmi.attacks import _text
from kmi.attacks._optim import minimize
from kmi.base import BaseAttack
from kmi.metrics.text import cosine_similarity, word_f1
from kmi.models.text import SPECIAL_TOKENS, check_texts, word_tokenizer

__all__ = ["EmbeddingInversion", "LMExtraction", "TokenOptimization"]

_SAMPLING = ("top-k", "temperature", "greedy")
_RANKINGS = ("perplexity", "zlib", "reference", "window")


def _positive_int(name, value, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"{name} must be an integer of at least {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def _positive_float(name, value):
    if not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    return float(value)


def _model_length(target, attack):
    model = target.model
    length = getattr(model, "sequence_length", None)
    if length is None and getattr(model, "inputs", None):
        length = model.inputs[0].shape[1]
    if length is None:
        raise ValueError(
            f"{attack} needs the model's sequence length: pass a kmi text model or a Keras "
            f"model built with keras.Input((length,)). Received: model={model!r}"
        )
    return int(length)


# ============================================================================ LMExtraction
class LMExtraction(BaseAttack):
    """Extract training text from a language model by generating and ranking samples.

    Carlini et al. (2021): sample many sequences from the model (top-k sampling,
    a temperature that decays from high to 1, or greedy decoding, each from prompts),
    deduplicate them, and rank them by a membership signal; memorised training text
    ranks first. The target is queried black-box: next-token probabilities for
    batches of token ids, every query counted.

    Parameters
    ----------
    target : Target or keras.Model
        A causal language model on token ids returning next-token scores of shape
        (n, length, vocabulary_size), e.g. :class:`kmi.models.CausalLM`.
    tokenizer : keras-hub tokenizer
        The model's tokenizer (to encode prompts and decode samples).
    prompts : list of str
        Text each sample starts from, used in turn (e.g. a known prefix, or the
        starts of public texts: Carlini et al.'s "Internet" prompts). At least one
        token each: the model cannot predict a first token from nothing.
    sampling : {"top-k", "temperature", "greedy"}, default="top-k"
        ``"top-k"`` samples among the ``top_k`` likeliest tokens; ``"temperature"``
        samples at a temperature decaying from ``temperature`` to 1 over the first
        ``decay_tokens`` tokens; ``"greedy"`` takes the likeliest token (one sample per
        prompt is enough).
    top_k : int, default=40
    temperature : float, default=10.0
        Starting temperature of ``sampling="temperature"``.
    decay_tokens : int, default=20
    max_new_tokens : int, default=None
        Tokens generated after the prompt; ``None`` fills the model's length.
    ranking : {"perplexity", "zlib", "reference", "window"}, default="zlib"
        How candidates are ordered, most likely memorised first: log-perplexity
        (lowest first); its ratio to the zlib entropy of the text; its ratio to the
        log-perplexity of ``reference`` (a model not trained on the secret data); the
        lowest log-perplexity over any ``window`` consecutive tokens.
    reference : Target or keras.Model, default=None
        Reference language model (same tokenizer) for ``ranking="reference"``.
    window : int, default=8
        Window length of ``ranking="window"``.
    n_samples : int, default=100
        Samples generated by :meth:`score`.
    top_n : int, default=10
        Candidates :meth:`score` checks.
    batch_size : int, default=64
        Samples generated at once.
    random_state : int, RandomState or None
    verbose : int, default=0

    Attributes
    ----------
    target_ : Target
    prompt_ids_ : list of ndarray
    sequence_length_ : int
    candidates_ : dict
        After :meth:`invert`: ``text``, ``score`` (the ranking value),
        ``log_perplexity``, ``zlib`` and, when computed, ``reference`` and ``window``,
        one entry per distinct candidate, in ranked order.

    Raises
    ------
    AccessError
        In ``fit``, for a label-only target.

    See Also
    --------
    TokenOptimization : White-box recovery of a secret after a known prefix.
    kmi.metrics.text.exposure : How exposed a canary is.

    References
    ----------
    N. Carlini, F. Tramer, E. Wallace, M. Jagielski, A. Herbert-Voss, K. Lee,
    A. Roberts, T. Brown, D. Song, U. Erlingsson, A. Oprea and C. Raffel. Extracting
    Training Data from Large Language Models. USENIX Security 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import CausalLM, byte_tokenizer
    >>> lm = CausalLM(256, 12, embedding_dim=16)
    >>> attack = LMExtraction(lm, tokenizer=byte_tokenizer(12), prompts=["ab"],
    ...                       random_state=0).fit()
    >>> len(attack.invert(4)) <= 4
    True
    """

    required_access = "black-box"

    def __init__(
        self,
        target=None,
        *,
        tokenizer=None,
        prompts=None,
        sampling="top-k",
        top_k=40,
        temperature=10.0,
        decay_tokens=20,
        max_new_tokens=None,
        ranking="zlib",
        reference=None,
        window=8,
        n_samples=100,
        top_n=10,
        batch_size=64,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.sampling = sampling
        self.top_k = top_k
        self.temperature = temperature
        self.decay_tokens = decay_tokens
        self.max_new_tokens = max_new_tokens
        self.ranking = ranking
        self.reference = reference
        self.window = window
        self.n_samples = n_samples
        self.top_n = top_n
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Validate the target, the tokenizer, the prompts and the parameters.

        ``X`` and ``y`` are ignored (the attack needs no auxiliary data).
        """
        target = self._validate_target()
        tok = _text.check_tokenizer(self.tokenizer, "LMExtraction")
        if self.sampling not in _SAMPLING:
            raise ValueError(
                f"sampling must be one of {_SAMPLING}. Received: sampling={self.sampling!r}"
            )
        if self.ranking not in _RANKINGS:
            raise ValueError(
                f"ranking must be one of {_RANKINGS}. Received: ranking={self.ranking!r}"
            )
        if self.ranking == "reference" and self.reference is None:
            raise ValueError(
                "ranking='reference' needs a reference language model. Received: reference=None"
            )
        _positive_int("top_k", self.top_k)
        _positive_float("temperature", self.temperature)
        _positive_int("decay_tokens", self.decay_tokens)
        _positive_int("window", self.window)
        _positive_int("n_samples", self.n_samples)
        _positive_int("top_n", self.top_n)
        _positive_int("batch_size", self.batch_size)
        if self.prompts is None:
            raise ValueError(
                "LMExtraction needs prompts to start samples from (a known prefix, or the "
                "starts of public texts). Received: prompts=None"
            )
        prompts = check_texts(self.prompts, "prompts")
        self.sequence_length_ = _model_length(target, "LMExtraction")
        self.prompt_ids_ = _text.encode(tok, prompts, "prompts")
        longest = max(len(p) for p in self.prompt_ids_)
        if longest >= self.sequence_length_:
            raise ValueError(
                f"Every prompt must be shorter than the model's {self.sequence_length_} "
                f"tokens. Received: a prompt of {longest} tokens"
            )
        if self.max_new_tokens is not None:
            _positive_int("max_new_tokens", self.max_new_tokens)
        if self.reference is not None:
            from kmi.targets import as_target

            self.reference_ = as_target(self.reference)
        return self

    # ------------------------------------------------------------------ generation
    def _generate(self, n, rng):
        L = self.sequence_length_
        ids = np.zeros((n, L), dtype="int32")
        start = np.zeros(n, dtype=np.int64)
        for i in range(n):
            p = self.prompt_ids_[i % len(self.prompt_ids_)]
            ids[i, : len(p)] = p
            start[i] = len(p)
        new = L - start.min() if self.max_new_tokens is None else int(self.max_new_tokens)
        end = np.minimum(start + new, L)
        for step in range(int(end.max() - start.min())):
            pos = start + step
            active = pos < end
            if not active.any():
                break
            rows = np.nonzero(active)[0]
            probs = _text.lm_probabilities(self.target_, ids[rows])
            p = probs[np.arange(len(rows)), pos[rows] - 1].astype("float64")
            p[:, 0] = 0.0  # never generate padding
            if self.sampling == "greedy":
                tok = np.argmax(p, axis=1)
            else:
                if self.sampling == "top-k":
                    k = min(int(self.top_k), p.shape[1])
                    kth = -np.sort(-p, axis=1)[:, k - 1 : k]
                    p = np.where(p >= kth, p, 0.0)
                else:
                    frac = min(step / max(int(self.decay_tokens), 1), 1.0)
                    t = float(self.temperature) + (1.0 - float(self.temperature)) * frac
                    p = np.exp(np.log(np.clip(p, 1e-30, 1.0)) / t) * (p > 0)
                p = p / p.sum(axis=1, keepdims=True)
                c = p.cumsum(axis=1)
                u = rng.random_sample((len(rows), 1))
                tok = np.minimum((c < u).sum(axis=1), p.shape[1] - 1)
            ids[rows, pos[rows]] = tok
        return ids, start

    def invert(self, n_samples: int | None = None) -> list[str]:
        """Generate ``n_samples`` samples and return the distinct ones, ranked.

        Parameters
        ----------
        n_samples : int, default=None
            Samples to generate; ``None`` uses ``self.n_samples``.

        Returns
        -------
        list of str
            Distinct generated texts (prompt included), most likely memorised first.
            Details are in :attr:`candidates_`. An interruption (KeyboardInterrupt)
            ranks the samples generated so far.
        """
        check_is_fitted(self, "prompt_ids_")
        n = _positive_int("n_samples", self.n_samples if n_samples is None else n_samples)
        rng = check_random_state(self.random_state)
        all_ids, all_start = [], []
        try:
            from kmi._progress import chunks

            for sl in chunks(n, self.batch_size, verbose=self.verbose, desc="LMExtraction"):
                ids, start = self._generate(sl.stop - sl.start, rng)
                all_ids.append(ids)
                all_start.append(start)
        except KeyboardInterrupt:
            done = sum(len(a) for a in all_ids)
            warnings.warn(
                f"Interrupted after {done} of {n} samples; ranking those.",
                RuntimeWarning,
                stacklevel=2,
            )
        if not all_ids:
            self.candidates_ = {"text": [], "score": np.zeros(0)}
            return []
        ids = np.concatenate(all_ids)
        start = np.concatenate(all_start)
        # deduplicate by token ids
        _, keep = np.unique(ids, axis=0, return_index=True)
        keep = np.sort(keep)
        ids, start = ids[keep], start[keep]
        probs = _text.lm_probabilities(self.target_, ids)
        logppl = _text.sequence_scores(probs, ids, start)
        texts = [_text.decode(self.tokenizer, row) for row in ids]
        zl = np.array([_text.zlib_entropy(t) for t in texts], dtype="float64")
        cand = {"text": texts, "log_perplexity": logppl, "zlib": zl}
        if self.ranking == "perplexity":
            score = logppl
        elif self.ranking == "zlib":
            score = logppl / np.maximum(zl, 1.0)
        elif self.ranking == "reference":
            ref = _text.lm_probabilities(self.reference_, ids)
            cand["reference"] = _text.sequence_scores(ref, ids, start)
            score = logppl / np.maximum(cand["reference"], 1e-6)
        else:
            nll = _text.token_nll(probs, ids)
            pos = np.arange(1, ids.shape[1])[None]
            mask = (pos >= start[:, None]) & (ids[:, 1:] != 0)
            cand["window"] = _text.window_log_perplexity(nll, mask, int(self.window))
            score = cand["window"]
        score = np.where(np.isnan(score), np.inf, score)
        order = np.argsort(score, kind="stable")
        self.candidates_ = {
            k: ([v[i] for i in order] if isinstance(v, list) else v[order])
            for k, v in {**cand, "score": score}.items()
        }
        return self.candidates_["text"]

    def score(self, X, y=None) -> float:
        """Fraction of the secret texts ``X`` found in the top ``top_n`` candidates.

        Runs :meth:`invert` with ``n_samples``; a secret counts as found when it is a
        substring of one of the ``top_n`` best-ranked candidates.
        """
        secrets = check_texts(X, "X")
        top = self.invert(self.n_samples)[: int(self.top_n)]
        return float(np.mean([any(s in c for c in top) for s in secrets]))


# ======================================================================= TokenOptimization
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
    random_state : int, RandomState or None
    verbose : int, default=0

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
    """

    required_access = "white-box"

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
        items = self.allowed_tokens
        if isinstance(items, str):
            items = list(items)
        ids = []
        unk = _text.unknown_id(tok)
        for item in items:
            if isinstance(item, numbers.Integral):
                i = int(item)
            else:
                row = _text.encode(tok, [str(item)], "allowed_tokens") if str(item).strip() else []
                if not row or len(row[0]) != 1:
                    raise ValueError(
                        "Each allowed token must be exactly one token of the tokenizer. "
                        f"Received: allowed token {item!r}"
                    )
                i = int(row[0][0])
            if not 0 < i < V or i == unk:
                raise ValueError(
                    f"Allowed token ids must lie in [1, {V}) and not be the unknown token. "
                    f"Received: allowed token {item!r}"
                )
            ids.append(i)
        if not ids:
            raise ValueError("allowed_tokens is empty. Received: allowed_tokens=[]")
        return np.unique(ids)

    def fit(self, X=None, y=None):
        """Validate the target (white-box, with an embedding path), tokenizer and parameters.

        ``X`` and ``y`` are ignored (the attack needs no auxiliary data).
        """
        target = self._validate_target()
        model = target.model
        if not (hasattr(model, "embed_probabilities") and hasattr(model, "call_embedded")):
            raise TypeError(
                "TokenOptimization feeds relaxed tokens through the model's embedding, so the "
                "model needs embed_probabilities and call_embedded (kmi.models.TextClassifier, "
                f"kmi.models.CausalLM). Received: model of type {type(model).__name__}"
            )
        _text.check_tokenizer(self.tokenizer, "TokenOptimization")
        _positive_int("n_tokens", self.n_tokens)
        _positive_int("n_restarts", self.n_restarts)
        _positive_int("max_iter", self.max_iter, minimum=0)
        _positive_float("learning_rate", self.learning_rate)
        _positive_float("temperature", self.temperature)
        _positive_float("final_temperature", self.final_temperature)
        self.sequence_length_ = _model_length(target, "TokenOptimization")
        self.allowed_ids_ = self._allowed(model)
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

    def invert(self, X, y=None) -> list[str]:
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

        fixed_oh = ops.one_hot(ops.convert_to_tensor(fixed), V)
        free_t = ops.convert_to_tensor(free)[..., None]
        bias_t = ops.convert_to_tensor(bias)
        pad_mask = ops.convert_to_tensor((fixed != 0) | (free > 0))
        labels_t = ops.convert_to_tensor(row_labels.astype("int32"))
        free_next = ops.convert_to_tensor(free[:, 1:])

        def relaxed(z, noise, tau):
            soft = ops.softmax((z + bias_t + noise) / tau, axis=-1)
            return free_t * soft + (1.0 - free_t) * fixed_oh

        def rows_loss(probs):
            out = model.call_embedded(model.embed_probabilities(probs), pad_mask, training=False)
            if lm:
                logp = ops.log_softmax(out[:, :-1], axis=-1)
                nll = -ops.sum(probs[:, 1:] * logp, axis=-1)
                return ops.sum(nll * free_next, axis=-1) / float(k)
            return ops.sparse_categorical_crossentropy(labels_t, out, from_logits=True)

        def loss_fn(z, aux):
            return rows_loss(relaxed(z, aux["noise"], aux["tau"]))

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
            verbose=self.verbose,
            desc="TokenOptimization",
        )
        self.n_iter_ = result.n_iter
        z = result.x + bias[None, None]
        hard = np.where(free > 0, np.argmax(z, axis=-1), fixed).astype("int32")
        final = ops.convert_to_numpy(rows_loss(ops.one_hot(ops.convert_to_tensor(hard), V)))
        self.target_.record_queries(n)
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

    def score(self, X, y=None) -> float:
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


# ===================================================================== EmbeddingInversion
_HEADS = ("bow", "decoder")


class EmbeddingInversion(BaseAttack):
    """Turn sentence embeddings back into text with an inverter trained on queries.

    ``fit(texts)`` embeds auxiliary (public) texts through the black-box target
    encoder and trains an inverter from embeddings to words; ``invert(embeddings)``
    returns texts. Two heads:

    - ``head="bow"``: a multi-label classifier predicting which words of a
      vocabulary the text holds (Song and Raghunathan 2020's inversion model); the
      words whose probability is at least ``threshold`` are returned, likeliest
      first (word order is not recovered);
    - ``head="decoder"``: a transformer decoder over words cross-attending to the
      projected embedding (the vec2text hypothesiser, small scale), decoded
      greedily. With ``n_hypotheses > 1``, ``n_hypotheses - 1`` more hypotheses are
      sampled at ``sampling_temperature``, all are re-embedded through the target
      (counted queries) and the one whose embedding is closest (cosine) to the
      given embedding is kept: vec2text's correction by re-embedding.

    Parameters
    ----------
    target : Target or callable
        Maps a list of strings to an array of vectors, e.g.
        ``Target(TextPipeline(tokenizer, SentenceEncoder(...)), task="embedding")``.
        A plain callable is wrapped as a black-box target with ``task="embedding"``.
    head : {"bow", "decoder"}, default="decoder"
    vocabulary_size : int, default=2000
        Words of the inverter's own vocabulary (from the auxiliary texts).
    sequence_length : int, default=24
        Longest text the decoder writes, in words.
    embedding_dim : int, default=64
        Width of the decoder's token embeddings.
    hidden_dim : int, default=256
    epochs : int, default=30
    batch_size : int, default=64
    learning_rate : float, default=2e-3
    threshold : float, default=0.5
        Word probability kept by the bag-of-words head (at least one word is).
    n_hypotheses : int, default=1
        Hypotheses per embedding for the decoder; above 1 the correction step runs.
    sampling_temperature : float, default=0.7
    random_state : int, RandomState or None
        Seeds Keras (weights, shuffling) and the sampling.
    verbose : int, default=0

    Attributes
    ----------
    target_ : Target
    tokenizer_ : keras-hub WordPieceTokenizer
        The inverter's word vocabulary.
    inverter_ : keras.Model
    embedding_dim_ : int
        Width of the target's embeddings.
    history_ : dict
        Training losses.
    n_queries_fit_ : int
        Target queries spent in ``fit``.

    Raises
    ------
    AccessError
        In ``fit``, for a label-only target.
    ValueError
        On empty texts, or embeddings of another width than the target's.

    See Also
    --------
    kmi.metrics.text.word_f1, kmi.metrics.text.bleu, kmi.metrics.text.exact_match

    References
    ----------
    C. Song and A. Raghunathan. Information Leakage in Embedding Models. CCS 2020.
    J. X. Morris, V. Kuleshov, V. Shmatikov and A. M. Rush. Text Embeddings Reveal
    (Almost) As Much As Text. EMNLP 2023.
    """

    required_access = "black-box"

    def __init__(
        self,
        target=None,
        *,
        head="decoder",
        vocabulary_size=2000,
        sequence_length=24,
        embedding_dim=64,
        hidden_dim=256,
        epochs=30,
        batch_size=64,
        learning_rate=2e-3,
        threshold=0.5,
        n_hypotheses=1,
        sampling_temperature=0.7,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.head = head
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.threshold = threshold
        self.n_hypotheses = n_hypotheses
        self.sampling_temperature = sampling_temperature
        self.random_state = random_state
        self.verbose = verbose

    def _validate_target(self):
        from kmi.targets import Target

        t = self.target
        if t is None or isinstance(t, Target) or not callable(t) or hasattr(t, "layers"):
            return super()._validate_target()
        # a plain callable on strings is an encoder: black-box, vectors out
        target = Target(t, access="black-box", task="embedding")
        target.require(self.required_access, attack=type(self).__name__)
        self.target_ = target
        return target

    def _embed(self, texts):
        out = np.asarray(self.target_.query(texts), dtype="float32")
        if out.ndim != 2 or len(out) != len(texts):
            raise ValueError(
                "The target must map n texts to an (n, embedding_dim) array of vectors. "
                f"Received: output shape={out.shape} for {len(texts)} texts"
            )
        return out

    def fit(self, X, y=None):
        """Query the target on the auxiliary texts ``X`` and train the inverter.

        Parameters
        ----------
        X : list of str
            Auxiliary texts (public data from a similar distribution).
        y : None
            Ignored.
        """
        target = self._validate_target()
        if self.head not in _HEADS:
            raise ValueError(f"head must be one of {_HEADS}. Received: head={self.head!r}")
        for name in ("vocabulary_size", "sequence_length", "embedding_dim", "hidden_dim"):
            _positive_int(name, getattr(self, name))
        _positive_int("epochs", self.epochs, minimum=0)
        _positive_int("batch_size", self.batch_size)
        _positive_int("n_hypotheses", self.n_hypotheses)
        _positive_float("learning_rate", self.learning_rate)
        _positive_float("sampling_temperature", self.sampling_temperature)
        if not (isinstance(self.threshold, numbers.Real) and 0 < self.threshold < 1):
            raise ValueError(
                f"threshold must lie in (0, 1). Received: threshold={self.threshold!r}"
            )
        texts = check_texts(X, "X")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**30))
        keras.utils.set_random_seed(seed)
        before = target.n_queries_
        emb = self._embed(texts)
        self.n_queries_fit_ = target.n_queries_ - before
        self.embedding_dim_ = emb.shape[1]
        L = int(self.sequence_length)
        self.tokenizer_ = word_tokenizer(
            texts, vocabulary_size=int(self.vocabulary_size), sequence_length=L
        )
        V = len(self.tokenizer_.get_vocabulary())
        ids = np.asarray(self.tokenizer_(texts), dtype="int32")
        opt = keras.optimizers.Adam(float(self.learning_rate))
        if self.head == "bow":
            self.inverter_ = _text.bow_inverter(
                self.embedding_dim_, V, int(self.hidden_dim), seed=seed
            )
            target_bow = np.zeros((len(ids), V), dtype="float32")
            rows = np.repeat(np.arange(len(ids)), ids.shape[1])
            target_bow[rows, ids.ravel()] = 1.0
            target_bow[:, : len(SPECIAL_TOKENS)] = 0.0
            self.inverter_.compile(
                optimizer=opt, loss=keras.losses.BinaryCrossentropy(from_logits=True)
            )
            fit_args = (emb, target_bow)
            sample_weight = None
        else:
            self.inverter_ = _text.decoder_inverter(
                self.embedding_dim_,
                V,
                L + 1,
                embedding_dim=int(self.embedding_dim),
                hidden_dim=int(self.hidden_dim),
                seed=seed,
            )
            dec_in, dec_out = self._teacher_forcing(ids)
            self.inverter_.compile(
                optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
            fit_args = ([emb, dec_in], dec_out)
            sample_weight = (dec_out != 0).astype("float32")
        # shuffled with the attack's own generator, one fit call per epoch, so that
        # a run does not depend on the backend's global data-shuffling state
        x_all, y_all = fit_args
        n = len(y_all)
        self.history_ = {"loss": []}
        try:
            for _ in range(int(self.epochs)):
                perm = rng.permutation(n)
                x = [a[perm] for a in x_all] if isinstance(x_all, list) else x_all[perm]
                hist = self.inverter_.fit(
                    x,
                    y_all[perm],
                    sample_weight=None if sample_weight is None else sample_weight[perm],
                    epochs=1,
                    batch_size=int(self.batch_size),
                    shuffle=False,
                    verbose=1 if self.verbose else 0,
                )
                self.history_["loss"].extend(hist.history["loss"])
        except KeyboardInterrupt:
            warnings.warn(
                f"Interrupted after {len(self.history_['loss'])} of {self.epochs} epochs of "
                "inverter training; it keeps the weights it has.",
                RuntimeWarning,
                stacklevel=2,
            )
        return self

    @staticmethod
    def _teacher_forcing(ids):
        n, L = ids.shape
        length = (ids != 0).sum(axis=1)
        dec_in = np.zeros((n, L + 1), dtype="int32")
        dec_out = np.zeros((n, L + 1), dtype="int32")
        dec_in[:, 0] = _text.BOS
        dec_in[:, 1:] = ids
        dec_out[:, :L] = ids
        dec_out[np.arange(n), length] = _text.EOS
        return dec_in, dec_out

    def _check_embeddings(self, embeddings):
        emb = np.asarray(embeddings, dtype="float32")
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim_ or len(emb) == 0:
            raise ValueError(
                f"embeddings must have shape (n, {self.embedding_dim_}), the width of the "
                f"target's embeddings seen in fit. Received: embeddings.shape={emb.shape}"
            )
        if not np.isfinite(emb).all():
            raise ValueError("embeddings contain NaN or inf. Received: non-finite embeddings")
        return emb

    def _words(self, row):
        vocab = self.tokenizer_.get_vocabulary()
        out = []
        for i in row:
            if i == _text.EOS:
                break
            if i >= len(SPECIAL_TOKENS):
                out.append(vocab[i])
        return " ".join(out)

    def _decode(self, emb, temperature, rng):
        n = len(emb)
        L = int(self.sequence_length) + 1
        tokens = np.zeros((n, L), dtype="int32")
        tokens[:, 0] = _text.BOS
        done = np.zeros(n, dtype=bool)
        if getattr(self, "_forward", None) is None:
            from kmi.backend import jit

            model = self.inverter_
            self._forward = jit(lambda e, t: model([e, t], training=False))
        for t in range(L - 1):
            logits = ops.convert_to_numpy(self._forward(emb, tokens))[:, t].astype("float64")
            logits[:, : _text.BOS + 1] = -np.inf  # no padding, unknown or BOS
            if temperature is None:
                nxt = np.argmax(logits, axis=1)
            else:
                z = logits / temperature
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                u = rng.random_sample((n, 1))
                nxt = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
            nxt = np.where(done, 0, nxt)
            tokens[:, t + 1] = nxt
            done |= nxt == _text.EOS
            if done.all():
                break
        return [self._words(row[1:]) for row in tokens]

    def invert(self, embeddings) -> list[str]:
        """Texts whose embeddings are ``embeddings``.

        Parameters
        ----------
        embeddings : array-like of shape (n, embedding_dim)
            Vectors released by the target encoder.

        Returns
        -------
        list of str
            One text per embedding (lower-cased words).
        """
        check_is_fitted(self, "inverter_")
        emb = self._check_embeddings(embeddings)
        if self.head == "bow":
            logits = ops.convert_to_numpy(self.inverter_(emb, training=False)).astype("float64")
            logits[:, : len(SPECIAL_TOKENS)] = -np.inf
            cut = np.log(self.threshold) - np.log1p(-self.threshold)  # sigmoid(cut) = threshold
            vocab = self.tokenizer_.get_vocabulary()
            out = []
            for row in logits:
                keep = np.nonzero(row >= cut)[0]
                if keep.size == 0:
                    keep = np.array([int(np.argmax(row))])
                keep = keep[np.argsort(-row[keep], kind="stable")]
                out.append(" ".join(vocab[i] for i in keep))
            return out
        rng = check_random_state(self.random_state)
        self._forward = None
        hyps = [self._decode(emb, None, rng)]
        try:
            for _ in range(int(self.n_hypotheses) - 1):
                hyps.append(self._decode(emb, float(self.sampling_temperature), rng))
        except KeyboardInterrupt:
            warnings.warn(
                f"Interrupted after {len(hyps)} of {self.n_hypotheses} hypotheses; "
                "correcting with those.",
                RuntimeWarning,
                stacklevel=2,
            )
        if len(hyps) == 1:
            return hyps[0]
        # correction: re-embed every distinct non-empty hypothesis (one batched query),
        # keep the one closest to the given embedding
        cands = [list(dict.fromkeys(h[i] for h in hyps if h[i].strip())) for i in range(len(emb))]
        flat = [c for row in cands for c in row]
        best = list(hyps[0])
        if not flat:
            return best
        vecs = self._embed(flat)
        owner = np.repeat(np.arange(len(emb)), [len(c) for c in cands])
        sim = cosine_similarity(vecs, emb[owner])
        pos = 0
        for i, row in enumerate(cands):
            if row:
                best[i] = row[int(np.argmax(sim[pos : pos + len(row)]))]
            pos += len(row)
        return best

    def score(self, X, y=None) -> float:
        """Word F1 of the texts recovered from the target's embeddings of ``X``.

        ``X`` are private texts the auditor holds; they are embedded through the
        target (counted queries) and inverted.
        """
        texts = check_texts(X, "X")
        check_is_fitted(self, "inverter_")
        return word_f1(texts, self.invert(self._embed(texts)))
