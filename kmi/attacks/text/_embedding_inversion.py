"""EmbeddingInversion: sentence embeddings back to text (Song and Raghunathan 2020)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Self

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks.text import _common as _text
from kmi.attacks.text._common import PARAMS_DOC
from kmi.attacks.text._refine import refine, soft_token_pipeline
from kmi.base import BaseAttack
from kmi.metrics.text import cosine_similarity, word_f1
from kmi.models.text import SPECIAL_TOKENS, word_tokenizer
from kmi.utils.validation import check_texts


@fill_doc(**PARAMS_DOC)
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

    With ``correction_steps > 0`` the correction goes on as a beam search: at each
    step every one of the ``beam_width`` best hypotheses proposes ``n_edits`` edits
    (insert, replace or delete one word, or swap two neighbours), drawn from the
    ``n_candidates`` words a bag-of-words head finds likeliest for the embedding
    (trained alongside the decoder); all are re-embedded (counted queries) and the
    closest ``beam_width`` texts are kept. A text stops when no edit brings it
    closer. This is vec2text's hypothesise, re-embed, correct loop, with a search
    in place of a trained corrector.

    With ``refine_steps > 0`` and white-box access to an encoder that runs from
    token embeddings, each text is then refined against the encoder's gradients, in
    the encoder's own sub-word tokens: the gradient ranks the ``refine_top_k`` best
    substitutions at every position (HotFlip), ``refine_candidates`` of them are
    scored exactly and the closest is kept, one token per step (the greedy
    coordinate gradient search of Zou et al. 2023). It can write words the
    inverter's vocabulary lacks. Every gradient and every scored text is a counted
    query.

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
    correction_steps : int, default=0
        Steps of the beam-search correction (0: none).
    beam_width : int, default=4
        Hypotheses kept per text between correction steps.
    n_edits : int, default=32
        Edits re-embedded per kept hypothesis and step (each one a counted query).
    n_candidates : int, default=20
        Words the edits insert or substitute: the likeliest of the bag-of-words head.
    refine_steps : int, default=0
        Steps of white-box refinement (0: none). Needs
        ``Target(TextPipeline(tokenizer, encoder), access="white-box",
        task="embedding")`` with an encoder that has ``embed`` and ``call_embedded``
        (:class:`kmi.models.SentenceEncoder`, or
        :func:`kmi.models.load_sentence_encoder`'s).
    refine_top_k : int, default=32
        Substitutions the gradient proposes per position.
    refine_candidates : int, default=64
        Substitutions scored per text and step (each a counted query).
    {random_state}
    {verbose}

    Attributes
    ----------
    target_ : Target
    tokenizer_ : keras-hub WordPieceTokenizer
        The inverter's word vocabulary.
    inverter_ : keras.Model
    proposer_ : keras.Model
        The bag-of-words head whose words the correction's edits use: the inverter
        itself for ``head="bow"``, one trained alongside for ``head="decoder"`` with
        ``correction_steps > 0``, else None.
    embedding_dim_ : int
        Width of the target's embeddings.
    history_ : dict
        Training losses.
    n_queries_fit_ : int
        Target queries spent in ``fit``.
    cosine_ : ndarray or None
        After :meth:`invert`: the cosine between each given embedding and that of
        the text returned (the target's own measure of success), when the texts
        were re-embedded (several hypotheses, correction or refinement steps); else
        None.

    Raises
    ------
    AccessError
        In ``fit``, for a label-only target, or with ``refine_steps > 0`` for a
        target that is not white-box.
    TypeError
        In ``fit``, with ``refine_steps > 0`` for an encoder without a path from
        token embeddings.
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
    J. Ebrahimi, A. Rao, D. Lowd and D. Dou. HotFlip: White-Box Adversarial Examples
    for Text Classification. ACL 2018.
    A. Zou, Z. Wang, J. Z. Kolter and M. Fredrikson. Universal and Transferable
    Adversarial Attacks on Aligned Language Models. arXiv:2307.15043, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import EmbeddingInversion
    >>> words = ["red", "green", "blue", "cat", "dog", "fish"]
    >>> def encoder(texts):  # a black-box sentence encoder: bag of words
    ...     return np.array([[t.split().count(w) for w in words] for t in texts], "float32")
    >>> public = ["red cat", "blue dog", "green fish", "red dog", "blue cat", "green cat"]
    >>> attack = EmbeddingInversion(encoder, head="bow", epochs=40, hidden_dim=16,
    ...                             learning_rate=0.05, random_state=0).fit(public)
    >>> text = attack.invert(encoder(["blue cat"]))[0]
    >>> sorted(text.split())  # a bag of words has no order
    ['blue', 'cat']
    """

    required_access = "black-box"
    needs_public_data = True
    level = "instance"
    _parameter_constraints = {
        "target": "no_validation",
        "head": [StrOptions({"bow", "decoder"})],
        "vocabulary_size": [Interval(Integral, 1, None, closed="left")],
        "sequence_length": [Interval(Integral, 1, None, closed="left")],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "threshold": [Interval(Real, 0, 1, closed="neither")],
        "n_hypotheses": [Interval(Integral, 1, None, closed="left")],
        "sampling_temperature": [Interval(Real, 0, None, closed="neither")],
        "correction_steps": [Interval(Integral, 0, None, closed="left")],
        "beam_width": [Interval(Integral, 1, None, closed="left")],
        "n_edits": [Interval(Integral, 1, None, closed="left")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "refine_steps": [Interval(Integral, 0, None, closed="left")],
        "refine_top_k": [Interval(Integral, 1, None, closed="left")],
        "refine_candidates": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

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
        correction_steps=0,
        beam_width=4,
        n_edits=32,
        n_candidates=20,
        refine_steps=0,
        refine_top_k=32,
        refine_candidates=64,
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
        self.correction_steps = correction_steps
        self.beam_width = beam_width
        self.n_edits = n_edits
        self.n_candidates = n_candidates
        self.refine_steps = refine_steps
        self.refine_top_k = refine_top_k
        self.refine_candidates = refine_candidates
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

    def fit(self, X: Sequence[str], y: None = None) -> Self:
        """Query the target on the auxiliary texts ``X`` and train the inverter.

        Parameters
        ----------
        X : list of str
            Auxiliary texts (public data from a similar distribution).
        y : None
            Ignored.
        """
        target = self.target_
        texts = check_texts(X, "X")
        if int(self.refine_steps):  # refused before any query is spent
            target.require("white-box", attack="EmbeddingInversion with refine_steps > 0")
            soft_token_pipeline(target, "EmbeddingInversion")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**30))
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
        self.history_ = {"loss": []}
        self.proposer_, interrupted = None, False
        if self.head == "bow" or int(self.correction_steps) > 0:
            self.proposer_, losses, interrupted = self._train_bow(emb, ids, V, seed, rng)
            self.history_["proposer_loss" if self.head == "decoder" else "loss"] = losses
        if self.head == "bow":
            self.inverter_ = self.proposer_
            return self
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
            optimizer=keras.optimizers.Adam(float(self.learning_rate)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        if not interrupted:  # a second model is not trained after an interruption
            weight = (dec_out != 0).astype("float32")
            losses, _ = self._train(self.inverter_, [emb, dec_in], dec_out, weight, rng)
            self.history_["loss"] = losses
        return self

    def _train_bow(self, emb, ids, V, seed, rng):
        """The bag-of-words head: which of the V words each text holds."""
        model = _text.bow_inverter(self.embedding_dim_, V, int(self.hidden_dim), seed=seed)
        target_bow = np.zeros((len(ids), V), dtype="float32")
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        target_bow[rows, ids.ravel()] = 1.0
        target_bow[:, : len(SPECIAL_TOKENS)] = 0.0
        model.compile(
            optimizer=keras.optimizers.Adam(float(self.learning_rate)),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        return (model, *self._train(model, emb, target_bow, None, rng))

    def _train(self, model, x_all, y_all, sample_weight, rng):
        """``epochs`` of training, shuffled with the attack's own generator (one fit
        call per epoch, so that a run does not depend on the backend's global
        data-shuffling state); an interruption keeps the weights so far.

        Returns the losses and whether training was interrupted."""
        n = len(y_all)
        losses = []
        try:
            for _ in range(int(self.epochs)):
                perm = rng.permutation(n)
                x = [a[perm] for a in x_all] if isinstance(x_all, list) else x_all[perm]
                hist = model.fit(
                    x,
                    y_all[perm],
                    sample_weight=None if sample_weight is None else sample_weight[perm],
                    epochs=1,
                    batch_size=int(self.batch_size),
                    shuffle=False,
                    verbose=1 if self.verbose else 0,
                )
                losses.extend(hist.history["loss"])
        except KeyboardInterrupt:
            warnings.warn(
                f"Interrupted after {len(losses)} of {self.epochs} epochs of {model.name} "
                "training; it keeps the weights it has.",
                RuntimeWarning,
                stacklevel=3,
            )
            return losses, True
        return losses, False

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

    def invert(self, embeddings: ArrayLike) -> list[str]:
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
        self.cosine_ = None
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
            if int(self.correction_steps):
                out = self._correct(emb, [out])
            return self._refine(emb, out)
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
        if len(hyps) == 1 and not int(self.correction_steps):
            return self._refine(emb, hyps[0])
        return self._refine(emb, self._correct(emb, hyps))

    def _refine(self, emb, texts):
        """White-box refinement of ``texts`` (``refine_steps``), else ``texts``."""
        if not int(self.refine_steps):
            return texts
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        texts, self.cosine_ = refine(
            self.target_,
            texts,
            emb,
            steps=int(self.refine_steps),
            top_k=int(self.refine_top_k),
            n_candidates=int(self.refine_candidates),
            rng=rng,
            attack="EmbeddingInversion",
            verbose=self.verbose,
        )
        return texts

    def _proposals(self, words, candidates, prob, limit):
        """Up to ``limit`` edits of a hypothesis, likeliest first by the word head.

        An edit's prior is the probability the bag-of-words head gives the word it
        brings in (insert), less that of the word it takes out (replace); deleting a
        word is worth 0.5 less its probability, a swap of neighbours 0.25. Words
        outside the head's ``n_candidates`` likeliest count as probability 0.
        """
        edits = []
        present = set(words)
        for j, w in enumerate(words):
            edits.append((0.5 - prob.get(w, 0.0), words[:j] + words[j + 1 :]))
            if j + 1 < len(words):
                swapped = [*words[:j], words[j + 1], w, *words[j + 2 :]]
                edits.append((0.25, swapped))
        for c in candidates:
            if c in present:
                continue
            for j in range(len(words) + 1):
                edits.append((prob[c], words[:j] + [c] + words[j:]))
            for j, w in enumerate(words):
                edits.append((prob[c] - prob.get(w, 0.0), words[:j] + [c] + words[j + 1 :]))
        edits.sort(key=lambda e: -e[0])
        return [" ".join(e) for _, e in edits[: int(limit)] if e]

    def _correct(self, emb, hyps):
        """Re-embed hypotheses, keep the closest; with ``correction_steps``, search on."""
        n, B = len(emb), int(self.beam_width)
        seen = [dict() for _ in range(n)]  # text -> cosine, per embedding

        def measure(texts_of):
            flat = [(i, t) for i, ts in enumerate(texts_of) for t in ts if t not in seen[i]]
            flat = list(dict.fromkeys(flat))
            if not flat:
                return
            vecs = self._embed([t for _, t in flat])
            owner = np.array([i for i, _ in flat])
            for (i, t), c in zip(flat, cosine_similarity(vecs, emb[owner])):
                seen[i][t] = float(c)

        measure([[h[i] for h in hyps if h[i].strip()] for i in range(n)])
        probs = vocab = None
        if int(self.correction_steps) and self.proposer_ is not None:
            vocab = self.tokenizer_.get_vocabulary()
            logits = ops.convert_to_numpy(self.proposer_(emb, training=False)).astype("float64")
            logits[:, : len(SPECIAL_TOKENS)] = -np.inf
            probs = 1.0 / (1.0 + np.exp(-logits))
        best = [max(s, key=s.get) if s else hyps[0][i] for i, s in enumerate(seen)]
        live = [bool(s) for s in seen]
        try:
            for _ in range(int(self.correction_steps) if probs is not None else 0):
                if not any(live):
                    break
                asked = [[] for _ in range(n)]
                for i in np.nonzero(live)[0]:
                    top = np.argsort(-probs[i])[: int(self.n_candidates)]
                    prob = {vocab[k]: float(probs[i, k]) for k in top}
                    cands = list(prob)
                    for h in sorted(seen[i], key=seen[i].get, reverse=True)[:B]:
                        asked[i] += self._proposals(h.split(), cands, prob, self.n_edits)
                measure(asked)
                for i in np.nonzero(live)[0]:
                    new = max(seen[i], key=seen[i].get)
                    live[i] = seen[i][new] > seen[i][best[i]]
                    best[i] = new
        except KeyboardInterrupt:
            warnings.warn(
                "Interrupted during the correction; returning the closest texts so far.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.cosine_ = np.array([seen[i].get(b, np.nan) for i, b in enumerate(best)])
        return best

    def score(self, X: Sequence[str], y: ArrayLike | None = None) -> float:
        """Word F1 of the texts recovered from the target's embeddings of ``X``.

        ``X`` are private texts the auditor holds; they are embedded through the
        target (counted queries) and inverted.
        """
        texts = check_texts(X, "X")
        check_is_fitted(self, "inverter_")
        return word_f1(texts, self.invert(self._embed(texts)))
