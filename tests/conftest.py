"""Shared test configuration: backend, threads and paths to the shared data."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

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
