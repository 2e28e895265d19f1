"""The README's main job, timed: ``kmi audit --demo`` (MNIST, no defense / DP-SGD / MID).

Runs :func:`kmi.audit.demo.mnist_audit` at full size, writes the report next to the
JSON (``benchmarks/results/audit_demo.html``) and saves the wall time, the settings
(test accuracies, epsilon), every attack's row and the summary to
``benchmarks/results/audit_demo.json``.

``--sweep`` times ``kmi audit --demo --sweep`` instead (DP-SGD at epsilon 1, 3, 8;
MID at beta 0.01, 0.1, 1) and saves ``audit_demo_sweep.json`` and ``.html``.

Usage::

    KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/audit_demo.py [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the smoke-test sizes")
    parser.add_argument("--sweep", action="store_true", help="three strengths per defense")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = "audit_demo_sweep" if args.sweep else "audit_demo"

    started = time.perf_counter()
    import keras

    from kmi.audit.demo import SWEEP_BETAS, SWEEP_EPSILONS, mnist_audit

    sweep = {"dp_epsilon": SWEEP_EPSILONS, "mid_beta": SWEEP_BETAS} if args.sweep else {}
    report = mnist_audit(**sweep, quick=args.quick, random_state=args.seed, verbose=1)
    wall = time.perf_counter() - started  # imports included, as a user sees it
    out = Path(args.out or RESULTS / f"{name}.json")
    report.to_html(out.with_suffix(".html"))
    data = {
        "benchmark": name,
        "command": "python benchmarks/audit_demo.py"
        + (" --sweep" if args.sweep else "")
        + (" --quick" if args.quick else ""),
        "keras_backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_end": os.getloadavg()[0],
        "wall_time_s": round(wall, 1),
        "settings": report.settings,
        "verdicts": report.verdicts,
        "rows": report.rows,
        "summary": report.summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nwall time {wall:.1f} s; saved {out} and {out.with_suffix('.html')}")


if __name__ == "__main__":
    main()
