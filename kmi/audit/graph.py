"""Audit of a graph model: which edges of its training graph the attacks recover."""

from __future__ import annotations

import time

import numpy as np

from kmi.attacks import graph as gr
from kmi.audit._checkpoint import append_checkpoint, read_checkpoint, selected
from kmi.metrics.graph import edge_metrics
from kmi.targets import Target
from kmi.utils.validation import check_adjacency, check_features, check_nodes

BASELINE = "FeatureSimilarity"

#: The attacks run by ``attacks="auto"``, the baseline first: (name, class, parameters).
GRAPH_ATTACKS = (
    (BASELINE, gr.FeatureSimilarity, {}),
    ("GraphMI", gr.GraphMI, {}),
    ("LinkStealing", gr.LinkStealing, {}),
    ("LinkTeller", gr.LinkTeller, {}),
)


def _graph_data(target, private_data):
    import scipy.sparse as sp

    if not (isinstance(private_data, (tuple, list)) and len(private_data) == 3):
        raise ValueError(
            "For modality='graph', private_data must be (features, adjacency, labels). "
            f"Received: private_data of type {type(private_data).__name__}"
        )
    X, A, y = private_data
    X = check_features(X, name="features", min_samples=2)
    A = check_adjacency(A, len(X))
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(
            f"labels must hold one label per node ({len(X)}). Received: labels shape {y.shape}"
        )
    shapes = getattr(target.model, "input_shape", None)
    if isinstance(shapes, list) and shapes and shapes[0][-1] not in (None, X.shape[1]):
        raise ValueError(
            f"The model takes {shapes[0][-1]} features per node, and the data has "
            f"{X.shape[1]}. Received: features shape {X.shape}"
        )
    A = sp.csr_matrix(A) if not sp.issparse(A) else A.tocsr()
    return X, A, y


def audit_graph(
    report,
    target,
    private_data,
    *,
    attacks="auto",
    attack_params=None,
    nodes=None,
    name="model",
    random_state=0,
    verbose=1,
    checkpoint=None,
):
    """Run the graph attacks on ``target`` (a Keras model on ``[features, adjacency]``)
    and add their edge AUC / AP over the attacked nodes to ``report``."""
    from kmi.models import GraphPredictor

    X, A, y = _graph_data(target, private_data)
    n = len(X)
    if nodes is None:
        k = n if n <= 100 else min(300, max(100, n // 10))
        nodes = np.sort(np.random.default_rng(random_state).choice(n, k, replace=False))
    nodes = check_nodes(nodes, n, min_nodes=2)
    served = Target(
        GraphPredictor(target.model, A.toarray()), access=target.access, batch_size=None
    )
    specs = GRAPH_ATTACKS if attacks == "auto" else attacks
    overrides = dict(attack_params or {})
    done = read_checkpoint(checkpoint)
    rows, skipped = [], {}
    for attack_name, cls, params in selected(specs):
        key = (str(name), "infer edges", attack_name, "attacked nodes")
        if key in done:
            rows.append(done[key])
            continue
        params = {**params, **overrides.get(attack_name, {})}
        if not served.allows(cls.required_access):
            skipped[attack_name] = (
                f"needs {cls.required_access} access; the target gives {target.access}"
            )
            if verbose:
                print(f"  skip {attack_name}: {skipped[attack_name]}", flush=True)
            continue
        names = cls().get_params()
        for option, value in (("verbose", verbose), ("random_state", random_state)):
            if option in names:
                params.setdefault(option, value)
        q0 = served.n_queries_
        t0 = time.perf_counter()
        if not cls.uses_target:  # a baseline: features only
            scores = cls(**params).fit().invert(X, nodes=nodes)
        elif cls.required_access == "white-box":  # reads the model itself, not its answers
            scores = cls(target, **params).fit().invert(X[nodes], y[nodes])
        else:  # queries the served model, which holds the private graph
            scores = cls(served, **params).fit().invert(X, nodes=nodes)
        seconds = time.perf_counter() - t0
        truth = A.toarray()
        row = {
            "target": str(name),
            "task": "infer edges",
            "split": "attacked nodes",
            "attack": attack_name,
            "access": cls.required_access if cls.uses_target else "none",
            "nodes": len(nodes),
        }
        for pairs in ("all", "balanced"):
            m = edge_metrics(truth, scores, nodes, pairs=pairs, random_state=random_state)
            row[f"auc_{pairs}"] = float(m["auc"])
            row[f"ap_{pairs}"] = float(m["ap"])
            row["edges"] = int(m["n_edges"])
        row["seconds"] = round(seconds, 3)
        row["queries"] = int(served.n_queries_ - q0)
        rows.append(row)
        append_checkpoint(checkpoint, [row])
        if verbose:
            print(
                f"  {attack_name:<18} AUC {row['auc_all']:.3f}  AP {row['ap_all']:.3f}  "
                f"{seconds:6.1f} s  {row['queries']} queries",
                flush=True,
            )
    report.settings.setdefault("graph", f"{n} nodes, {A.nnz // 2} edges")
    report.settings[f"{name}: attacked nodes"] = len(nodes)
    report.settings[f"{name}: access"] = target.access
    if skipped:
        report.settings[f"{name}: skipped attacks"] = "; ".join(
            f"{k}: {v}" for k, v in skipped.items()
        )
    report.rows += rows
    report.summary += summarize_graph(rows)
    return rows


def summarize_graph(rows) -> list[str]:
    """Per model: the best edge AUC against the feature-similarity baseline."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target]
        base = next((r for r in group if r["attack"] == BASELINE), None)
        attacks = [r for r in group if r["attack"] != BASELINE]
        if not attacks:
            continue
        best = max(attacks, key=lambda r: r["auc_all"])
        line = (
            f"{target}: the strongest attack, {best['attack']} ({best['access']} access), "
            f"tells edges from non-edges among {best['nodes']} attacked nodes with AUC "
            f"{best['auc_all']:.3f} (0.5 is guessing)"
        )
        if base is not None:
            verdict = (
                "the model leaks edges beyond what node features tell"
                if best["auc_all"] > base["auc_all"] + 0.02
                else "no clear leak beyond what node features tell"
            )
            line += (
                f"; node features alone, without the model, give {base['auc_all']:.3f}: {verdict}"
            )
        lines.append(line + ".")
    return lines
