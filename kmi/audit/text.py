"""Audit of a text model: whether secrets it was trained on can be extracted, or, for
a sentence encoder, how much of the texts behind its embeddings comes back."""

from __future__ import annotations

import time

import numpy as np

from kmi.attacks import text as tx
from kmi.audit._checkpoint import append_checkpoint, read_checkpoint, selected
from kmi.audit.verdict import encoder_verdicts, text_verdicts

#: The attacks run by ``attacks="auto"`` on a language model: (name, class, parameters).
TEXT_ATTACKS = (
    ("LMExtraction", tx.LMExtraction, {"n_samples": 200, "top_n": 10}),
    ("TokenOptimization", tx.TokenOptimization, {}),
)

#: The attacks run by ``attacks="auto"`` on a sentence encoder (a target with
#: ``task="embedding"``): the bag-of-words inverter, and the decoder with its
#: hypotheses re-embedded and the beam-search correction.
ENCODER_ATTACKS = (
    ("EmbeddingInversion-bow", tx.EmbeddingInversion, {"head": "bow", "epochs": 30}),
    (
        "EmbeddingInversion-decoder",
        tx.EmbeddingInversion,
        {"head": "decoder", "epochs": 15, "n_hypotheses": 4, "correction_steps": 3},
    ),
)

#: On a white-box encoder that runs from token embeddings, each attack above is also
#: followed by this white-box refinement of its texts (a second row, "+refine").
ENCODER_REFINEMENT = {"refine_steps": 5, "refine_candidates": 32}


def _split(secrets, prompts):
    if isinstance(secrets, str) or not len(secrets):
        raise ValueError(
            "For modality='text', private_data must be a non-empty list of the secret "
            f"texts the model was trained on. Received: private_data={secrets!r}"
        )
    if not prompts:
        raise ValueError(
            "A text audit needs the known prefix of each secret: pass prompts=[...]. "
            f"Received: prompts={prompts!r}"
        )
    pairs = []
    for s in secrets:
        p = max((p for p in prompts if s.startswith(p)), key=len, default=None)
        if p is None or p == s:
            raise ValueError(
                "Each secret must start with one of the prompts and go on after it. "
                f"Received: secret {s!r} with prompts {list(prompts)!r}"
            )
        pairs.append((p, s[len(p) :]))
    return pairs


def audit_text(
    report,
    target,
    secrets,
    *,
    tokenizer,
    prompts,
    public_data=None,
    references=None,
    attacks="auto",
    attack_params=None,
    name="model",
    random_state=0,
    verbose=1,
    checkpoint=None,
):
    """Try to extract ``secrets`` (each a known prompt followed by a secret part) from a
    language model; add exact-recovery rates to ``report``. A sentence encoder
    (``target.task == "embedding"``) is audited by :func:`audit_encoder` instead."""
    if target.task == "embedding" and references is not None:
        raise ValueError(
            "references apply to a language model's audit (exposure of its secrets), not "
            "to a sentence encoder's. Received: references with a target of task='embedding'"
        )
    if target.task == "embedding":
        return audit_encoder(
            report,
            target,
            secrets,
            public_data=public_data,
            attacks=attacks,
            attack_params=attack_params,
            name=name,
            random_state=random_state,
            verbose=verbose,
            checkpoint=checkpoint,
        )
    if public_data is not None:
        raise ValueError(
            "public_data applies to a sentence encoder's audit (a target with "
            "task='embedding'); a language model's audit takes tokenizer= and prompts=. "
            f"Received: public_data with a target of task={target.task!r}"
        )
    if tokenizer is None:
        raise ValueError(
            "A text audit needs the model's tokenizer: pass tokenizer=... Received: tokenizer=None"
        )
    secrets = [str(s) for s in secrets]
    pairs = _split(secrets, prompts)
    specs = TEXT_ATTACKS if attacks == "auto" else attacks
    overrides = dict(attack_params or {})
    done = read_checkpoint(checkpoint)
    rows, skipped = [], {}
    for attack_name, cls, params in selected(specs):
        key = (str(name), "extract secrets", attack_name, "secrets")
        if key in done:
            rows.append(done[key])
            continue
        params = {**params, **overrides.get(attack_name, {})}
        if not target.allows(cls.required_access):
            skipped[attack_name] = (
                f"needs {cls.required_access} access; the target gives {target.access}"
            )
            continue
        params.setdefault("random_state", random_state)
        params.setdefault("verbose", verbose)
        q0 = target.n_queries_
        t0 = time.perf_counter()
        if cls.generative:  # generates and ranks candidates from the prompts
            attack = cls(
                target, tokenizer=tokenizer, prompts=sorted(set(p for p, _ in pairs)), **params
            )
            top = attack.fit().invert()[: int(attack.top_n)]
            found_1 = [any(s in c for c in top[:1]) for s in secrets]
            found_n = [any(s in c for c in top) for s in secrets]
            metrics = {
                "exact_top_1": float(np.mean(found_1)),
                f"exact_top_{attack.top_n}": float(np.mean(found_n)),
            }
        else:
            n_tokens = max(int(np.count_nonzero(np.asarray(tokenizer([s])))) for _, s in pairs)
            params.setdefault("n_tokens", n_tokens)
            try:
                attack = cls(target, tokenizer=tokenizer, **params).fit()
            except TypeError as exc:  # a model without an embedding path
                if attacks != "auto" or "embed_probabilities" not in str(exc):
                    raise
                skipped[attack_name] = str(exc).split(". ")[0]
                continue
            guesses = attack.invert([p for p, _ in pairs])
            exact = [g.strip() == s.strip() for g, (_, s) in zip(guesses, pairs)]
            chars = [
                np.mean([a == b for a, b in zip(g, s)]) if s else 0.0
                for g, (_, s) in zip(guesses, pairs)
            ]
            metrics = {
                "exact_top_1": float(np.mean(exact)),
                "character_accuracy": float(np.mean(chars)),
            }
        seconds = time.perf_counter() - t0
        row = {
            "target": str(name),
            "task": "extract secrets",
            "split": "secrets",
            "attack": attack_name,
            "access": cls.required_access,
            "secrets": len(secrets),
            **metrics,
            "seconds": round(seconds, 3),
            "queries": int(target.n_queries_ - q0),
        }
        rows.append(row)
        append_checkpoint(checkpoint, [row])
        if verbose:
            print(
                f"  {attack_name:<18} exact recovery {metrics['exact_top_1']:.3f}  "
                f"{seconds:6.1f} s",
                flush=True,
            )
    if references is not None:
        rows.append(_exposure_row(target, tokenizer, pairs, references, name))
    report.settings.setdefault("secrets", len(secrets))
    report.settings[f"{name}: access"] = target.access
    if skipped:
        report.settings[f"{name}: skipped attacks"] = "; ".join(
            f"{k}: {v}" for k, v in skipped.items()
        )
    report.rows += rows
    for row in rows:
        if "exposure" in row:
            report.summary.append(
                f"{row['target']}: the secrets' exposure is {row['exposure']:.1f} bits on "
                f"average (at most {row['max_exposure']:.1f} with these references): "
                "the higher, the likelier the model finds them than other fills."
            )
            continue
        report.summary.append(
            f"{row['target']}: {row['attack']} ({row['access']} access) recovers "
            f"{row['exact_top_1']:.0%} of {row['secrets']} secrets exactly as its first guess"
            " (guessing a random secret almost never does)."
        )
    report.verdicts += text_verdicts(rows)
    return rows


def _exposure_row(target, tokenizer, pairs, references, name):
    """Each secret's exposure against the references sharing its prompt."""
    from kmi.attacks.text import _common as _text
    from kmi.metrics.text import exposure
    from kmi.utils.validation import check_texts

    references = check_texts(references, "references")
    length = _text.model_length(target, "The exposure measure")
    t0, q0 = time.perf_counter(), target.n_queries_
    bits, n_refs = [], []
    for prompt, secret in pairs:
        same = [r for r in references if r.startswith(prompt) and r != prompt + secret]
        if not same:
            raise ValueError(
                "Each secret needs references that start with its prompt (other fills of "
                f"its template). Received: none for the prompt {prompt!r}"
            )
        texts = [prompt + secret, *same]
        ids = np.zeros((len(texts), length), dtype="int32")
        for i, row in enumerate(_text.encode(tokenizer, texts, "references")):
            ids[i, : min(len(row), length)] = row[:length]
        start = len(_text.encode(tokenizer, [prompt], "prompts")[0])
        probs = _text.lm_probabilities(target, ids)
        scores = _text.sequence_scores(probs, ids, np.full(len(ids), start))
        bits.append(float(exposure(scores[0], scores[1:])))
        n_refs.append(len(same))
    return {
        "target": str(name),
        "task": "extract secrets",
        "split": "secrets",
        "attack": "Exposure",
        "access": "black-box",
        "secrets": len(pairs),
        "exposure": float(np.mean(bits)),
        "max_exposure": float(np.log2(min(n_refs) + 1)),
        "seconds": round(time.perf_counter() - t0, 3),
        "queries": int(target.n_queries_ - q0),
    }


def _refinable(target) -> bool:
    """Whether ``target`` allows the white-box refinement of inverted texts."""
    from kmi.attacks.text._refine import soft_token_pipeline

    if not target.allows("white-box"):
        return False
    try:
        soft_token_pipeline(target, "The audit")
    except TypeError:
        return False
    return True


def audit_encoder(
    report,
    target,
    private_texts,
    *,
    public_data,
    attacks="auto",
    attack_params=None,
    name="model",
    random_state=0,
    verbose=1,
    checkpoint=None,
):
    """Invert a sentence encoder's embeddings of ``private_texts``; add the rows.

    Each attack is fitted on the public texts (queried through the encoder) and
    inverts the embeddings of the private ones (queried once, before the attacks).
    Rows: word precision / recall / F1, exact match, BLEU, the cosine between each
    embedding and that of the recovered text, queries and time, next to a baseline
    that answers the most frequent public words without a query. With
    ``attacks="auto"`` on a white-box target whose encoder runs from token
    embeddings, each inversion is also refined against the encoder's gradients
    (:data:`ENCODER_REFINEMENT`), in a second row named ``<attack>+refine``. The
    best attack's first recovered texts are shown beside the originals.
    """
    from kmi.metrics.text import cosine_similarity, text_attack_metrics, tokenize_words
    from kmi.utils.validation import check_texts

    private = check_texts(private_texts, "private_data")
    if public_data is None:
        raise ValueError(
            "A sentence encoder's audit needs public texts to train the inverters on "
            "(texts like the private ones, that the attacker may hold): pass "
            "public_data=[...]. Received: public_data=None"
        )
    public = check_texts(public_data, "public_data")
    specs = ENCODER_ATTACKS if attacks == "auto" else attacks
    overrides = dict(attack_params or {})
    done = read_checkpoint(checkpoint)
    embeddings = np.asarray(target.query(private), dtype="float32")
    counts = {}
    for text in public:
        for w in tokenize_words(text):
            counts[w] = counts.get(w, 0) + 1
    guess = " ".join(sorted(counts, key=counts.get, reverse=True)[:5])
    base = {
        "target": str(name),
        "task": "invert embeddings",
        "split": "private texts",
        "attack": "FrequentWordsBaseline",
        "access": "none",
        "texts": len(private),
        **text_attack_metrics(private, [guess] * len(private)),
        "seconds": 0.0,
        "queries": 0,
    }
    rows, recovered = [base], {}
    refine = attacks == "auto" and _refinable(target)

    def add_row(attack_name, access, texts, q0, t0):
        closeness = cosine_similarity(target.query([t or "?" for t in texts]), embeddings)
        row = {
            **{k: base[k] for k in ("target", "task", "split")},
            "attack": attack_name,
            "access": access,
            "texts": len(private),
            **text_attack_metrics(private, texts),
            "cosine": float(np.mean(closeness)),
            "seconds": round(time.perf_counter() - t0, 3),
            "queries": int(target.n_queries_ - q0),
        }
        rows.append(row)
        recovered[attack_name] = texts
        append_checkpoint(checkpoint, [row])
        if verbose:
            print(
                f"  {attack_name:<28} word F1 {row['word_f1']:.3f}  exact "
                f"{row['exact_match']:.3f}  {row['seconds']:6.1f} s",
                flush=True,
            )

    for attack_name, cls, params in selected(specs):
        names = [attack_name, f"{attack_name}+refine"] if refine else [attack_name]
        keys = [(str(name), "invert embeddings", n, "private texts") for n in names]
        if all(k in done for k in keys):
            rows.extend(done[k] for k in keys)
            continue
        params = {**params, **overrides.get(attack_name, {})}
        params.setdefault("random_state", random_state)
        q0, t0 = target.n_queries_, time.perf_counter()
        attack = cls(target, **params).fit(public)
        fitted = target.n_queries_ - q0
        add_row(attack_name, cls.required_access, attack.invert(embeddings), q0, t0)
        if refine:  # the same fitted attack, its texts refined white-box
            q1, t1 = target.n_queries_, time.perf_counter()
            texts = attack.set_params(**ENCODER_REFINEMENT).invert(embeddings)
            t1 -= rows[-1]["seconds"]  # the fit and the black-box inversion count too
            add_row(names[1], "white-box", texts, q1 - fitted, t1)
    report.settings.setdefault("private texts", len(private))
    report.settings.setdefault("public texts", len(public))
    report.settings[f"{name}: access"] = target.access
    report.rows += rows
    verdicts = encoder_verdicts(rows)
    report.verdicts += verdicts
    for v in verdicts:
        report.summary.append(f"{v['target']}: {v['why']}.")
        if v["attack"] in recovered:
            shown = min(10, len(private))
            report.add_texts(
                f"{v['target']}: {v['attack']}",
                private[:shown],
                recovered[v["attack"]][:shown],
                note="Words are lower-cased by the inverter; punctuation is not recovered.",
            )
    return rows
