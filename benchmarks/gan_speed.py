"""How long one step of GMI's GAN prior takes: the README demo's dominant cost.

``GMI.fit`` trains a WGAN-GP with the audit's GMI settings (``kmi.audit.image.
IMAGE_ATTACKS``: width 16, latent 32, batch 64, five critic steps per generator step)
on the demo's 1,000 public MNIST images (its split, random_state=0), padded to 32x32.
The time per generator step is the difference between a 220-step and a 20-step fit,
divided by 200, so compilation and set-up cancel out.  Run it on the code before the
compiled training loop too (``PYTHONPATH=<checkout of 8b4b48a>`` and ``--tag
_before``) for the before/after comparison.  Writes
``benchmarks/results/gan_speed_<backend><tag>.json``.

Run::

    KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/gan_speed.py
    KERAS_BACKEND=jax python benchmarks/gan_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras

import kmi
from kmi.attacks.image import GMI
from kmi.audit.demo import DEMO_GAN_STEPS, mnist_demo_split
from kmi.audit.image import IMAGE_ATTACKS

RESULTS = Path(__file__).parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=20, help="steps of the first fit")
    parser.add_argument("--long", type=int, default=220, help="steps of the second fit")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    args = parser.parse_args(argv)
    X, _, _, _, public_idx = mnist_demo_split(random_state=0)
    public = X[public_idx]
    target = keras.Sequential(
        [keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    params = next(p for name, _, p in IMAGE_ATTACKS if name == "GMI")
    params = {k: v for k, v in params.items() if k != "gan_steps"}
    fit_s = {}
    for steps in (args.short, args.long):
        started = time.perf_counter()
        GMI(target, gan_steps=steps, random_state=0, **params).fit(public)
        fit_s[steps] = round(time.perf_counter() - started, 2)
        print(f"GMI.fit with {steps} GAN steps: {fit_s[steps]} s", flush=True)
    per_step = (fit_s[args.long] - fit_s[args.short]) / (args.long - args.short)
    result = {
        "benchmark": "gan_speed",
        "kmi": str(Path(kmi.__file__).parent),
        "keras_backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "public_images": len(public),
        "gmi_params": params,
        "fit_s": fit_s,
        "ms_per_gan_step": round(1000 * per_step, 1),
        "demo_gan_steps": DEMO_GAN_STEPS,
        "demo_gan_estimate_s": round(DEMO_GAN_STEPS * per_step, 1),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gan_speed_{keras.backend.backend()}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Saved {out}")


if __name__ == "__main__":
    main()
