"""Link inference on Cora: GraphMI, LinkStealing, LinkTeller and the feature baseline,
then the EdgeRand / LapGraph trade-off, wall times and memory growth.

1. A 2-layer GCN trained as Kipf and Welling do on Cora's standard split: row-normalised
   features, Adam 0.01, dropout 0.5, weight decay 5e-4 on the first layer, at most 200
   epochs with their early stopping on the validation loss (window 10). The paper reports
   81.5% test accuracy. ``--gcn-only SEED ...`` reruns just this step for a few seeds.
2. 10% of the nodes, drawn at random, are attacked; every attack is measured with edge
   AUC and AP on all pairs among them and on balanced pairs (every edge and as many
   random non-edges):
   - GraphMI (white-box; the attacker knows the attacked nodes' features and labels and
     reconstructs the subgraph among them); the paper reports AUC 0.868 / AP 0.883 on
     Cora (Zhang et al. 2021, Table 2);
   - LinkStealing, unsupervised, all eight distances (best reported);
   - LinkTeller (one query of the whole graph per attacked node);
   - FeatureSimilarity (cosine of features, no query).
3. EdgeRand and LapGraph at epsilon in {1, 3, 8}: the GCN is trained and served on the
   perturbed graph; test accuracy against each attack's AUC on the true edges.
4. GraphMI's wall time and peak-memory growth with the number of attacked nodes, each
   size in a fresh process, extrapolated to the largest subgraph that fits in 24 GB
   (``--memory-only`` reruns just this part).

Run:  KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 nice -n 10 \
      python benchmarks/graph_cora.py --data-home ../shared/data
Writes benchmarks/results/graph_cora.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kmi.attacks import FeatureSimilarity, GraphMI, LinkStealing, LinkTeller
from kmi.attacks._graph import DISTANCES
from kmi.datasets import load_planetoid
from kmi.defenses import EdgeRand, LapGraph
from kmi.metrics.graph import edge_metrics
from kmi.models import GraphPredictor, gcn
from kmi.targets import Target

RESULTS = Path(__file__).parent / "results"
PAPER = {"GraphMI": {"auc": 0.868, "ap": 0.883}}


class KipfEarlyStopping(keras.callbacks.Callback):
    """Kipf and Welling's early stopping: stop once the validation loss exceeds the mean
    of the ``window`` epochs before it (``train.py`` of their GCN code), keeping the
    last weights. Keras' ``EarlyStopping`` waits for no improvement instead."""

    def __init__(self, window=10):
        super().__init__()
        self.window = window

    def on_train_begin(self, logs=None):
        self.val_losses = []
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self.val_losses.append(float(logs["val_loss"]))
        previous = self.val_losses[-(self.window + 1) : -1]
        if epoch > self.window and self.val_losses[-1] > np.mean(previous):
            self.stopped_epoch = epoch
            self.model.stop_training = True


def node_weights(n, idx):
    """Sample weights that make Keras' mean over all n nodes the mean over ``idx``."""
    weights = np.zeros(n, "float32")
    weights[idx] = n / len(idx)
    return weights


def train_gcn(data, adjacency, seed, *, max_epochs=200, window=10):
    """Kipf and Welling's recipe; returns the model, the dense adjacency, the test
    accuracy, the training time and the number of epochs run."""
    X, y = data.features, data.labels
    sums = X.sum(axis=1)
    if not np.allclose(sums[sums > 0], 1.0, atol=1e-4):
        # Raw binary Cora features give ~0.79 test accuracy on either backend.
        raise ValueError(
            "train_gcn follows Kipf and Welling: load the features with "
            "load_planetoid(..., row_normalize=True). Received: feature row sums in "
            f"[{sums.min():.3g}, {sums.max():.3g}]"
        )
    keras.utils.set_random_seed(seed)
    n = len(y)
    model = gcn(X.shape[1], data.n_classes)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    A = adjacency.toarray()
    stop = KipfEarlyStopping(window)
    start = time.perf_counter()
    history = model.fit(
        [X, A],
        y,
        sample_weight=node_weights(n, data.idx_train),
        batch_size=n,
        epochs=max_epochs,
        shuffle=False,
        verbose=0,
        callbacks=[stop],
        validation_data=([X, A], y, node_weights(n, data.idx_val)),
        validation_batch_size=n,
    )
    seconds = time.perf_counter() - start
    pred = model.predict([X, A], batch_size=n, verbose=0).argmax(1)
    acc = float(np.mean(pred[data.idx_test] == y[data.idx_test]))
    return model, A, acc, seconds, len(history.history["loss"])


def measure(name, fn, truth, nodes):
    start = time.perf_counter()
    scores = fn()
    seconds = time.perf_counter() - start
    row = {"attack": name, "seconds": round(seconds, 2)}
    for pairs in ("all", "balanced"):
        m = edge_metrics(truth, scores, nodes, pairs=pairs, random_state=0)
        row[f"auc_{pairs}"] = round(m["auc"], 4)
        row[f"ap_{pairs}"] = round(m["ap"], 4)
        row["n_edges"] = m["n_edges"]
    return row, scores


def run_attacks(model, A_served, data, truth, nodes, *, all_distances=True):
    X, y = data.features, data.labels
    rows = []
    row, _ = measure(
        "FeatureSimilarity", lambda: FeatureSimilarity().fit().invert(X, nodes=nodes), truth, nodes
    )
    rows.append(row)
    row, _ = measure(
        "GraphMI",
        lambda: GraphMI(model).fit().invert(X[nodes], y[nodes]),
        truth[nodes][:, nodes],
        None,
    )
    rows.append(row)
    target = Target(GraphPredictor(model, A_served), batch_size=None)
    best = None
    for metric in DISTANCES if all_distances else ("correlation",):
        row, _ = measure(
            f"LinkStealing ({metric})",
            lambda metric=metric: LinkStealing(target, metric=metric).fit().invert(X, nodes=nodes),
            truth,
            nodes,
        )
        if all_distances:
            rows.append(row)
        if best is None or row["auc_all"] > best["auc_all"]:
            best = row
    rows.append({**best, "attack": "LinkStealing (best)"} if all_distances else best)
    target.reset_queries()
    row, _ = measure(
        "LinkTeller", lambda: LinkTeller(target).fit().invert(X, nodes=nodes), truth, nodes
    )
    row["queries"] = target.n_queries_
    rows.append(row)
    return rows


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gcn_accuracy(seeds, data_home):
    """Train the GCN once per seed; print each test accuracy and their mean."""
    data = load_planetoid("cora", data_home, row_normalize=True, download=False)
    accs = []
    for seed in seeds:
        _, _, acc, seconds, epochs = train_gcn(data, data.adjacency, seed)
        accs.append(acc)
        print(
            f"{keras.backend.backend()} seed {seed}: test accuracy {acc:.4f} "
            f"({epochs} epochs, {seconds:.1f} s)",
            flush=True,
        )
    print(f"{keras.backend.backend()} mean over seeds {seeds}: {np.mean(accs):.4f}")


def memory_probe(k, data_home, seed):
    """Run GraphMI on k random Cora nodes in this (fresh) process; print peak-RSS growth."""
    data = load_planetoid("cora", data_home, row_normalize=True, download=False)
    keras.utils.set_random_seed(seed)
    model = gcn(data.features.shape[1], data.n_classes)  # weights do not change memory
    nodes = np.sort(np.random.default_rng(seed).choice(len(data.labels), k, replace=False))
    warm = nodes[:20]  # load and compile everything once on a tiny graph
    GraphMI(model, max_iter=2).fit().invert(data.features[warm], data.labels[warm])
    before = maxrss_mb()
    start = time.perf_counter()
    GraphMI(model).fit().invert(data.features[nodes], data.labels[nodes])
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "nodes": k,
                "seconds": round(seconds, 2),
                "baseline_mb": round(before, 1),
                "peak_mb": round(maxrss_mb(), 1),
                "growth_mb": round(maxrss_mb() - before, 1),
            }
        )
    )


def memory_growth(sizes, data_home, seed):
    """GraphMI's time and peak memory against the number of attacked nodes.

    Each size runs in a fresh process (peak RSS only grows), and the growth is fitted
    by ``a * k**2`` (GraphMI holds a few dense k x k matrices) to estimate the largest
    subgraph that fits in 24 GB.
    """
    rows = []
    for k in sizes:
        cmd = [sys.executable, __file__, "--memory-probe", str(k), "--seed", str(seed)]
        if data_home:
            cmd += ["--data-home", str(data_home)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    k = np.array([r["nodes"] for r in rows], float)
    growth = np.array([r["growth_mb"] for r in rows], float)
    a = float(np.sum(growth * k**2) / np.sum(k**4))  # least squares, MB per node^2
    budget_mb = 24 * 1024 - max(r["baseline_mb"] for r in rows)
    largest = int(np.sqrt(budget_mb / a)) if a > 0 else None
    return {
        "runs": rows,
        "mb_per_node_squared": a,
        "bytes_per_node_squared": round(a * 2**20, 1),
        "largest_nodes_in_24gb": largest,
    }


def table(rows, cols):
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 3.0, 8.0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[271, 542, 1083, 2166, 2708])
    parser.add_argument("--out", default=str(RESULTS / "graph_cora.json"))
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only rerun the memory part, updating an existing JSON",
    )
    parser.add_argument(
        "--gcn-only",
        type=int,
        nargs="+",
        metavar="SEED",
        default=None,
        help="only train the GCN with these seeds and print its test accuracy (writes no JSON)",
    )
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gcn_only is not None:
        gcn_accuracy(args.gcn_only, args.data_home)
        return
    if args.memory_probe is not None:
        memory_probe(args.memory_probe, args.data_home, args.seed)
        return
    if args.memory_only:
        out = Path(args.out)
        result = json.loads(out.read_text())
        result["memory"] = memory_growth(args.sizes, args.data_home, args.seed)
        print(json.dumps(result["memory"], indent=2))
        out.write_text(json.dumps(result, indent=2))
        return

    data = load_planetoid("cora", args.data_home, row_normalize=True, download=False)
    truth = data.adjacency
    n = len(data.labels)
    nodes = np.sort(np.random.default_rng(args.seed).choice(n, n // 10, replace=False))
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "seed": args.seed,
        "attacked_nodes": len(nodes),
        "paper": PAPER,
    }

    model, A, acc, seconds, epochs = train_gcn(data, truth, args.seed)
    result["gcn"] = {
        "test_accuracy": round(acc, 4),
        "train_seconds": round(seconds, 1),
        "epochs": epochs,
        "paper_test_accuracy": 0.815,
    }
    print(f"GCN on Cora: test accuracy {acc:.4f} ({epochs} epochs, {seconds:.1f} s)", flush=True)
    rows = run_attacks(model, A, data, truth, nodes)
    result["attacks"] = rows
    cols = [
        "attack",
        "auc_all",
        "ap_all",
        "auc_balanced",
        "ap_balanced",
        "n_edges",
        "seconds",
        "queries",
    ]
    print(table(rows, cols), flush=True)

    trade = [
        {
            "defense": "none",
            "epsilon": "",
            "test_accuracy": round(acc, 4),
            **{r["attack"]: r["auc_all"] for r in rows if "(" not in r["attack"]},
            "LinkStealing": next(
                r["auc_all"] for r in rows if r["attack"] == "LinkStealing (correlation)"
            ),
        }
    ]
    for cls in (EdgeRand, LapGraph):
        for eps in args.epsilons:
            start = time.perf_counter()
            noisy = cls(epsilon=eps, random_state=args.seed).fit_transform(truth)
            perturb_s = time.perf_counter() - start
            m, A_noisy, acc_d, train_s, _ = train_gcn(data, noisy, args.seed)
            d_rows = run_attacks(m, A_noisy, data, truth, nodes, all_distances=False)
            entry = {
                "defense": cls.__name__,
                "epsilon": eps,
                "test_accuracy": round(acc_d, 4),
                "edges": int(noisy.nnz // 2),
                "perturb_seconds": round(perturb_s, 2),
                "train_seconds": round(train_s, 1),
            }
            for r in d_rows:
                key = "LinkStealing" if r["attack"].startswith("LinkStealing") else r["attack"]
                entry[key] = r["auc_all"]
            trade.append(entry)
            print(entry, flush=True)
    result["tradeoff"] = trade
    print(
        table(
            trade,
            [
                "defense",
                "epsilon",
                "edges",
                "test_accuracy",
                "GraphMI",
                "LinkStealing",
                "LinkTeller",
                "FeatureSimilarity",
            ],
        ),
        flush=True,
    )

    result["memory"] = memory_growth(args.sizes, args.data_home, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
