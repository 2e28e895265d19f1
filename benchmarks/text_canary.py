"""Canary exposure and extraction from a small language model, with and without DP-SGD.

Carlini et al. (2019)'s secret-sharer experiment at small scale: a byte-level
GPT-2-shaped model (keras-hub's ``GPT2Backbone`` and ``GPT2CausalLM``, built from a
config with random weights; ``--model kmi`` uses :class:`kmi.models.CausalLM`) is
trained by kmi on tweets (:func:`kmi.datasets.load_tweets`) into which one canary
``"my social security number is ###-##-####"`` (:func:`kmi.datasets.make_canaries`,
a faker SSN) is inserted 1, 5 and 20 times. The attacks take the keras-hub model
itself. For each model it reports:

- the canary's exposure (rank-based against 1,000 references from the same
  randomness space, scaled to |R| = 888,931,098, and the skew-normal extrapolation);
- whether :class:`kmi.attacks.LMExtraction` (greedy, top-k and beam search from the
  prefix, and beam search within the canary's known format of digits and dashes,
  ranked by perplexity) puts the canary first, or among its top 10;
- Carlini et al. (2021)'s untargeted extraction: top-k samples from the first word of
  held-out tweets, near-duplicates dropped, ranked by zlib ratio, lowercase ratio
  and perplexity; the precision of the top 100 (a sample counts when its generated
  part holds 24 characters of training text verbatim);
- the secret-token accuracy and exact recovery of :class:`kmi.attacks.TokenOptimization`
  (white-box, digits and dashes allowed);
- the log-perplexity of held-out tweets (utility).

Then the 20-repetition model is trained again with :class:`kmi.defenses.DPSGD`
calibrated to epsilon 3 and 8 (delta 1/N), and the same is reported.

Usage::

    python benchmarks/text_canary.py            # the full run (2 busy CPU cores: ~30 min)
    python benchmarks/text_canary.py --model kmi  # kmi's own CausalLM instead
    python benchmarks/text_canary.py --quick    # a smoke run in about a minute

Writes ``benchmarks/results/text_canary.json`` (``text_canary_quick.json`` with
``--quick``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

from kmi.attacks import LMExtraction, TokenOptimization
from kmi.datasets import load_tweets, make_canaries
from kmi.metrics.text import exposure, sequence_log_perplexity
from kmi.models import CausalLM, HubCausalLM, byte_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def log_perplexities(model, ids, mask, batch_size=256):
    out = []
    for i in range(0, len(ids), batch_size):
        logits = model(ids[i : i + batch_size], training=False)
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        out.append(
            sequence_log_perplexity(probs, ids[i : i + batch_size], mask=mask[i : i + batch_size])
        )
    return np.concatenate(out)


def secret_mask(ids, start, stop):
    mask = np.zeros(ids.shape, dtype=bool)
    mask[:, start:stop] = True
    return mask


def build_lm(cfg):
    """The language model to train, and what the attacks are given."""
    if cfg["model"] == "kmi":
        model = CausalLM(
            256,
            cfg["length"],
            embedding_dim=cfg["dim"],
            num_heads=2,
            intermediate_dim=2 * cfg["dim"],
            num_layers=cfg["layers"],
        )
        return model, model
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=cfg["layers"],
        num_heads=2,
        hidden_dim=cfg["dim"],
        intermediate_dim=2 * cfg["dim"],
        dropout=0.0,
        max_sequence_length=cfg["length"],
    )
    gpt2 = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    return HubCausalLM(gpt2), gpt2  # trained on token ids; attacked as it is


def train_lm(ids, cfg, seed, dp_epsilon=None):
    keras.utils.set_random_seed(seed)
    model, attacked = build_lm(cfg)
    x, y, w = CausalLM.lm_targets(ids)
    model(x[:1])  # build: DP-SGD checks the trainable variables when training begins
    callbacks = []
    dp = None
    if dp_epsilon is not None:
        from kmi.defenses import DPSGD

        dp = DPSGD(l2_norm_clip=1.0, target_epsilon=dp_epsilon, num_examples=len(x), seed=seed)
        callbacks.append(dp)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg["lr_dp"] if dp else cfg["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    t0 = time.time()
    hist = model.fit(
        x,
        y,
        sample_weight=w,
        epochs=cfg["epochs"],
        batch_size=cfg["batch"],
        callbacks=callbacks,
        verbose=0,
    )
    info = {"train_seconds": round(time.time() - t0, 1), "final_loss": hist.history["loss"][-1]}
    if dp is not None:
        info.update(
            epsilon=float(dp.epsilon_),
            delta=float(dp.delta_),
            noise_multiplier=float(dp.noise_multiplier_),
        )
    return model, attacked, info


def untargeted(attacked, tok, prompts, train_texts, cfg, seed):
    """Carlini et al. (2021): sample, drop near-duplicates, rank; precision of the top 100."""
    corpus = "\n".join(train_texts)

    def verbatim(text, run=24):
        """Whether the generated part holds ``run`` characters of training text verbatim
        (the model never learned where a text ends, so it goes on after one)."""
        for p in prompts:
            if text.startswith(p):
                new = text[len(p) :]
                return any(new[i : i + run] in corpus for i in range(len(new) - run + 1))
        return False

    out = {}
    for ranking in ("zlib", "lowercase", "perplexity"):
        attack = LMExtraction(
            attacked,
            tokenizer=tok,
            prompts=prompts,
            sampling="top-k",
            top_k=40,
            ranking=ranking,
            batch_size=256,
            random_state=seed,
        ).fit()
        cands = attack.invert(cfg["untargeted_samples"])
        top = cands[:100]
        hits = [verbatim(c) for c in top]
        out[ranking] = {
            "precision_top100": float(np.mean(hits)) if top else 0.0,
            "n_candidates": len(cands),
            "n_near_duplicates_dropped": int(attack.n_duplicates_),
            "examples": [c for c, h in zip(top, hits) if h][:5],
        }
    return out


def evaluate(model, attacked, tok, canary, test_ids, cfg, seed):
    L = cfg["length"]
    prefix_len = len(canary.prefix.encode())
    stop = len(canary.texts[0].encode())
    ids = np.asarray(tok(canary.texts + canary.references), dtype="int32")[:, :L]
    scores = log_perplexities(model, ids, secret_mask(ids, prefix_len, stop))
    out = {
        "exposure_rank": float(
            exposure(scores[0], scores[1:], randomness_space=canary.randomness_space)
        ),
        "exposure_skew_normal": float(
            exposure(
                scores[0],
                scores[1:],
                randomness_space=canary.randomness_space,
                method="skew-normal",
            )
        ),
        "max_exposure": canary.log2_randomness_space,
    }
    test_mask = test_ids != 0
    out["test_log_perplexity"] = float(np.nanmean(log_perplexities(model, test_ids, test_mask)))
    n_new = stop - prefix_len
    found = {}
    for name in ("greedy", "top-k", "beam", "beam within the format"):
        sampling = name.split()[0]
        attack = LMExtraction(
            attacked,
            tokenizer=tok,
            prompts=[canary.prefix],
            sampling=sampling,
            top_k=10,
            beam_width=cfg["beam"],
            # the canary's format is known: digits and dashes (Carlini et al. 2019)
            allowed_tokens="0123456789-" if "format" in name else None,
            max_new_tokens=n_new,
            ranking="perplexity",
            dedup="exact",
            batch_size=cfg["samples"],
            random_state=seed,
        ).fit()
        n = {"greedy": 1, "top-k": cfg["samples"], "beam": cfg["beam"]}[sampling]
        cands = attack.invert(n)
        hits = [canary.texts[0] in c for c in cands]
        found[name] = {
            "top1": bool(hits[0]),
            "top10": bool(any(hits[:10])),
            "n_candidates": len(cands),
            "best": cands[0],
        }
    out["lm_extraction"] = found
    tokopt = TokenOptimization(
        model,  # white-box: for GPT-2, HubCausalLM's soft-token path
        tokenizer=tok,
        n_tokens=n_new,
        allowed_tokens="0123456789-",
        n_restarts=cfg["restarts"],
        max_iter=cfg["opt_iter"],
        random_state=seed,
    ).fit()
    acc = tokopt.score(canary.texts)
    out["token_optimization"] = {
        "token_accuracy": acc,
        "exact": bool(acc == 1.0),
        "recovered": tokopt.candidates_[0][0][0],
        "chance_token_accuracy": 1 / 11,
    }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in about a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dp", action="store_true", help="skip the DP-SGD models")
    parser.add_argument(
        "--dp-only", action="store_true", help="only the DP-SGD models (text_canary_dp.json)"
    )
    parser.add_argument("--model", choices=("gpt2", "kmi"), default="gpt2")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    parser.add_argument(
        "--repeats", type=int, nargs="+", default=None, help="canary insertions (default 1 5 20)"
    )
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("KMI_QUICK") == "1"
    cfg = dict(
        model=args.model,
        length=64,
        dim=64,
        layers=1,
        n_train=300 if quick else 1000,
        n_test=100 if quick else 500,
        epochs=args.epochs or (2 if quick else 10),
        batch=64,
        lr=3e-3,
        lr_dp=3e-3,
        samples=16 if quick else 64,
        beam=8 if quick else 16,
        untargeted_samples=200 if quick else 1000,
        restarts=2 if quick else 4,
        opt_iter=20 if quick else 150,
        repeats=tuple(args.repeats or ((1, 20) if quick else (1, 5, 20))),
        dp_epsilons=() if (quick or args.no_dp) else (8.0, 3.0),
        references=200 if quick else 1000,
    )
    rng = np.random.default_rng(args.seed)
    tweets = load_tweets().data
    tweets = [t for t in tweets if len(t.encode()) <= cfg["length"] and len(t) > 10]
    idx = rng.permutation(len(tweets))
    train = [tweets[i] for i in idx[: cfg["n_train"]]]
    test = [tweets[i] for i in idx[cfg["n_train"] : cfg["n_train"] + cfg["n_test"]]]
    canary = make_canaries(1, n_references=cfg["references"], seed=args.seed)
    tok = byte_tokenizer(cfg["length"] + 1)
    test_ids = np.asarray(tok(test), dtype="int32")[:, : cfg["length"]]
    runs = []
    plan = [] if args.dp_only else [(k, None) for k in cfg["repeats"]]
    plan += [(cfg["repeats"][-1], e) for e in cfg["dp_epsilons"]]
    for repeats, eps in plan:
        texts = train + canary.texts * repeats
        order = np.random.default_rng(args.seed + repeats).permutation(len(texts))
        ids = np.asarray(tok([texts[i] for i in order]), dtype="int32")
        model, attacked, info = train_lm(ids, cfg, args.seed, dp_epsilon=eps)
        res = evaluate(model, attacked, tok, canary, test_ids, cfg, args.seed)
        prompts = sorted({t.split()[0] + " " for t in test if t.split()})[:50]
        res["untargeted"] = untargeted(attacked, tok, prompts, texts, cfg, args.seed)
        row = {"repeats": repeats, "dp_target_epsilon": eps, **info, **res}
        runs.append(row)
        print(
            f"repeats={repeats:>2} eps={str(eps):>4}: exposure rank {res['exposure_rank']:.1f} "
            f"/ skew-normal {res['exposure_skew_normal']:.1f} of {res['max_exposure']:.1f} bits; "
            f"LMExtraction greedy top1={res['lm_extraction']['greedy']['top1']} top-k "
            f"top10={res['lm_extraction']['top-k']['top10']} beam "
            f"top1={res['lm_extraction']['beam']['top1']} beam in format "
            f"top1={res['lm_extraction']['beam within the format']['top1']}; top-100 verbatim "
            f"{res['untargeted']['zlib']['precision_top100']:.2f} (zlib); TokenOptimization "
            f"acc={res['token_optimization']['token_accuracy']:.2f}; "
            f"test log-ppl {res['test_log_perplexity']:.3f}; {info['train_seconds']} s",
            flush=True,
        )
    out = {
        "benchmark": "text_canary",
        "quick": quick,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "canary": canary.texts[0],
        "randomness_space": canary.randomness_space,
        "keras_backend": keras.backend.backend(),
        "machine": platform.platform(),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    name = ("text_canary_quick" if quick else "text_canary") + (
        "_kmi_lm" if args.model == "kmi" else ""
    )
    path = RESULTS / f"{name}{'_dp' if args.dp_only else ''}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
