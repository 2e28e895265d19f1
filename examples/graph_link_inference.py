"""Audit a GCN for edge leakage, then train it on an edge-DP graph.

A two-community graph stands in for a private social graph: a GCN is trained on it,
served behind an API that answers node-feature queries, and attacked by GraphMI
(white-box), LinkStealing and LinkTeller (black-box), next to the feature-similarity
baseline that never queries the model. Then the graph is protected with LapGraph and
the model retrained: test accuracy against attack AUC.

Swap in Cora with ``kmi.datasets.load_planetoid("cora")``; see
benchmarks/graph_cora.py for the full-size run.
"""

import os

import keras
import numpy as np

from kmi.attacks import FeatureSimilarity, GraphMI, LinkStealing, LinkTeller
from kmi.defenses import LapGraph
from kmi.metrics.graph import edge_metrics
from kmi.models import GraphPredictor, gcn
from kmi.targets import Target

QUICK = bool(os.environ.get("KMI_QUICK"))  # CI's tiny run
rng = np.random.default_rng(0)
n = 120
labels = np.repeat([0, 1], n // 2)
same = labels[:, None] == labels[None, :]
A = np.triu(rng.random((n, n)) < np.where(same, 0.1, 0.005), 1).astype("float32")
A = A + A.T
X = (
    rng.random((n, 16))
    < np.where(labels[:, None] == 1, [0.5] * 8 + [0.2] * 8, [0.2] * 8 + [0.5] * 8)
).astype("float32")
train = rng.random(n) < 0.5


def train_gcn(adjacency):
    keras.utils.set_random_seed(0)
    model = gcn(X.shape[1], 2)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(
        [X, adjacency],
        labels,
        sample_weight=train / train.mean(),
        batch_size=n,
        epochs=30 if QUICK else 100,
        shuffle=False,
        verbose=0,
    )
    pred = model.predict([X, adjacency], batch_size=n, verbose=0).argmax(1)
    return model, float(np.mean(pred[~train] == labels[~train]))


def audit(model, served):
    api = Target(GraphPredictor(model, served), batch_size=None)  # black-box
    attacks = {
        "FeatureSimilarity": FeatureSimilarity().fit(),
        "GraphMI": GraphMI(model, max_iter=20 if QUICK else 50).fit(),
        "LinkStealing": LinkStealing(api, metric="correlation").fit(),
        "LinkTeller": LinkTeller(api).fit(),
    }
    out = {}
    for name, attack in attacks.items():
        scores = attack.invert(X, labels) if name == "GraphMI" else attack.invert(X)
        out[name] = edge_metrics(A, scores)["auc"]  # always against the true graph
    return out


model, acc = train_gcn(A)
print(
    f"no defense     accuracy {acc:.2f}  edge AUC",
    {k: round(v, 3) for k, v in audit(model, A).items()},
)
for eps in (1.0, 8.0):
    noisy = LapGraph(epsilon=eps, random_state=0).fit_transform(A).toarray()
    model, acc = train_gcn(noisy)
    print(
        f"LapGraph eps={eps:g} accuracy {acc:.2f}  edge AUC",
        {k: round(v, 3) for k, v in audit(model, noisy).items()},
    )
