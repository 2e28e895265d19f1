"""Shared test configuration: backend, threads and paths to the shared data."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One OpenMP thread: scikit-learn's histogram gradient boosting otherwise spins its
# threads against the other process of a 2-core machine and runs many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# JAX: XLA compiles every new function, and the suite compiles the same tiny models
# over and over (in both workers and in the examples' subprocesses). A compilation
# cache, fresh for each run and shared by its processes, took tests/attacks/test_image.py
# from 170 s to 123 s. The first process (pytest, or xdist's controller) creates it;
# the workers and subprocesses inherit the variable.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="kmi-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# XLA's CPU backend at optimisation level 1 (of 3): the suite's programs are tiny
# and compiled once or a few times each, so compiling is most of the JAX run's time
# (80 % of the summed test durations, measured with jax.monitoring). Level 1 compiled
# a digit classifier's training step and six random-uniform initialisers in 9.0 s
# against 19.9 s, and ran the training no slower; level 0 ran it twice as slowly.
# It reaches the TensorFlow run too, for its few XLA-compiled functions.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
    ).strip()


def _xla_accepts(flag):
    """Whether this JAX's XLA knows ``flag`` (an unknown one in XLA_FLAGS aborts it)."""
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=f"{os.environ['XLA_FLAGS']} {flag}", JAX_PLATFORMS="cpu")
    probe = "import jax.numpy as jnp; (jnp.zeros(2) + 1).block_until_ready()"
    try:
        run = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


# XLA's CPU backend without its MLIR fusion emitters (JAX only, and only where this
# XLA knows the flag): those emitters are most of the compiling time of the suite's
# small programs. With them off, tests/attacks/test_image.py and tests/defenses/
# test_ghost.py took 146 s against 214 s on JAX (-n 2, quiet), and a KEDMI test's
# compiling 10.0 s against 14.5 s. Set once, by the first process; workers and
# subprocesses inherit it. The TensorFlow run leaves XLA_FLAGS as it is here.
_NO_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if (
    os.environ["KERAS_BACKEND"] == "jax"
    and "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]
    and _xla_accepts(_NO_FUSION_EMITTERS)
):
    os.environ["XLA_FLAGS"] += f" {_NO_FUSION_EMITTERS}"

# Python's cyclic garbage collector less often (first generation every 50,000
# allocations, not 700): tracing a model (tf.function, jax.jit, vectorized_map) makes
# many short-lived objects, and each full collection walks every object the earlier
# tests left alive. One TensorFlow test took 40-46 s in three runs of the whole suite
# against 2.5 s in its own file; with this it did not reach the 30 slowest (one run).
import gc  # noqa: E402

gc.set_threshold(50_000, 50, 1_000)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

SHARED_DATA = Path(
    os.environ.get("KMI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture
def shared_data():
    """Path to the reference data sets (``../shared/data``); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; set KMI_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    """Seed Python, NumPy and the backend before each test."""
    keras.utils.set_random_seed(0)


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"


@pytest.hookimpl(tryfirst=True)  # before pytest's -m selection reads the marks
def pytest_collection_modifyitems(config, items):
    """On JAX, a test marked ``jax_slow`` is ``slow`` (left out unless ``-m slow``).

    Those are end-to-end runs (the examples, whole audits) that the TensorFlow run
    keeps: on JAX they mostly compile XLA programs, and every kmi line they reach is
    reached on JAX by faster tests too.
    """
    if keras.backend.backend() == "jax":
        for item in items:
            if item.get_closest_marker("jax_slow"):
                item.add_marker(pytest.mark.slow)


# --------------------------------------------------------------- tabular records
def make_records(n, seed):
    """Records whose label is (mostly) sex XOR (colour == "red")."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 70, n),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "sex": pd.Categorical(rng.choice(["F", "M"], n, p=[0.4, 0.6])),
            "hours": rng.normal(40, 5, n).round(1),
        }
    )
    flip = rng.random(n) < 0.05
    label = (frame["sex"] == "M") ^ (frame["colour"] == "red") ^ flip
    return frame, np.where(label, "yes", "no")


@pytest.fixture(scope="session")
def records():
    """(X_members, y_members, X_aux, y_aux) as DataFrames with categorical columns."""
    X_m, y_m = make_records(400, seed=1)
    X_a, y_a = make_records(400, seed=2)
    return X_m, y_m, X_a, y_a


@pytest.fixture(scope="session")
def tree_pipeline(records):
    """A scikit-learn Pipeline (ColumnTransformer + decision tree) trained on members."""
    X_m, y_m, _, _ = records
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["colour", "sex"])],
        remainder="passthrough",
    )
    return make_pipeline(prep, DecisionTreeClassifier(max_depth=6, random_state=0)).fit(X_m, y_m)
