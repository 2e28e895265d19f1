"""DPSGD under keras.distribution on JAX, 8 virtual CPU devices: DataParallel, ModelParallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("_data_parallel_script.py")


def _run(*cases):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *cases],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return {result.pop("case"): result for result in lines}


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution runs on JAX")
def test_dpsgd_under_data_parallel_matches_one_device():
    # the cases in one subprocess: each process imports TensorFlow, JAX and Keras
    results = _run(
        "ghost:conv",
        "vectorized:mlp",
        "ghost:transformer",
        "ghost:noise",
        "ghost:transformer-model",
        "vectorized:conv",
    )
    for case in ("ghost:conv", "vectorized:mlp", "ghost:transformer"):
        result = results[case]
        assert result["devices"] == 8, case
        assert "'batch': 8" in result["sharding"]  # variables live on an eight-device mesh
        assert "epsilon" in result["history_multi"]
        assert result["history_multi"]["epsilon"] == pytest.approx(
            result["history_single"]["epsilon"]
        )
        # same seed, same noise: the eight-device run is the one-device run
        for a, b in zip(result["multi"], result["single"]):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5, err_msg=case)
        assert result["history_multi"]["loss"] == pytest.approx(
            result["history_single"]["loss"], rel=1e-5
        )
    # vectorized clipping of a sharded convolution is refused: jax.vmap'd convolution
    # gradients come out wrong on a sharded batch (kernel gradients off by up to 1.8
    # here), so DP-SGD would clip the wrong gradients
    error = results["vectorized:conv"]["error"]
    assert "sharded" in error and "clipping='ghost'" in error
    # the noise is drawn once for the global batch, not once per device: one step on
    # zero inputs moves a 256 x 8 kernel by the noise alone, of standard deviation
    # lr * noise_multiplier * l2_norm_clip / batch on 8 devices as on one (per-device
    # noise would make it sqrt(8) times larger, summed, or smaller, averaged), so the
    # privacy accounting, which assumes one draw, holds
    noise = results["ghost:noise"]
    assert noise["std_multi"] == pytest.approx(noise["std_single"], rel=1e-5)
    assert noise["std_multi"] == pytest.approx(noise["std_expected"], rel=0.1)
    # ModelParallel: the transformer's dense and attention kernels split across 4
    # devices; the clipped, noised training and each example's gradient norm (summed
    # across the shards) equal the one-device ones
    model = results["ghost:transformer-model"]
    output_dense = [k for k in model["sharding"] if k.endswith("output_dense/kernel")]
    assert [model["sharding"][k] for k in output_dense] == ["P('model', None)"]
    assert sum("'model'" in spec for spec in model["sharding"].values()) == 5
    for a, b in zip(model["multi"], model["single"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    np.testing.assert_allclose(
        model["history_multi"]["norms"], model["history_single"]["norms"], rtol=1e-4
    )
