"""The ``kmi`` command: light imports, --version, --verbose, and every input file error."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import kmi
from kmi.audit.cli import main

ROOT = Path(kmi.__file__).resolve().parents[1]


def _run(*args, env=None, **kwargs):
    """Run Python in a fresh process that imports this checkout's ``kmi``."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, **kwargs
    )


# ------------------------------------------------------------------ fast paths
def test_importing_the_command_imports_no_backend():
    code = (
        "import sys\n"
        "import kmi.audit.cli\n"
        "try:\n"
        "    kmi.audit.cli.main(['audit', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'sklearn') if m in sys.modules))"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_of_kmi_audit_still_import():
    from kmi.audit import (
        IMAGE_ATTACKS,
        TABULAR_ATTACKS,
        Report,
        audit,
        run_image_attacks,
        run_tabular_attacks,
        train_evaluation_model,
    )
    from kmi.audit.api import audit as api_audit
    from kmi.audit.report import Report as report_Report

    assert audit is api_audit and Report is report_Report
    assert IMAGE_ATTACKS and TABULAR_ATTACKS
    assert callable(run_image_attacks) and callable(run_tabular_attacks)
    assert callable(train_evaluation_model)
    assert set(kmi.audit.__all__) <= set(dir(kmi.audit))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kmi.audit.nope  # noqa: B018


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kmi {kmi.__version__}"
    result = _run("-m", "kmi", "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"kmi {kmi.__version__}"


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["audit"], False),
        (["--verbose", "audit"], True),
        (["audit", "--verbose"], True),
        (["--verbose", "audit", "--demo"], True),
    ],
)
def test_verbose_before_or_after_the_subcommand(argv, verbose):
    from kmi.audit.cli import _parser

    assert _parser().parse_args(argv).verbose is verbose


def test_tensorflow_logging_hidden_unless_verbose_or_set(monkeypatch, capsys):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert main(["audit"]) == 2  # a usage error, after the environment is set
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert main(["--verbose", "audit"]) == 2
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert main(["audit", "--verbose"]) == 2
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's choice is kept
    assert main(["audit"]) == 2
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert "--model with --data and --modality" in capsys.readouterr().err


# ------------------------------------------------------------------ input files
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny saved model, and tabular data that fits it."""
    root = tmp_path_factory.mktemp("cli")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype("float32")
    y = rng.integers(0, 2, 20)
    np.savez(root / "data.npz", x_private=X, y_private=y, x_public=X, y_public=y)
    return root


def _audit(tmp_path, model, data, modality="tabular"):
    return main(
        [
            "audit",
            "--model",
            str(model),
            "--data",
            str(data),
            "--modality",
            modality,
            "--sensitive-feature",
            "0",
            "--output",
            str(tmp_path / "rep"),
            "-q",
        ]
    )


def _expect_usage_error(capsys, tmp_path, model, data, *fragments):
    assert _audit(tmp_path, model, data) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("kmi audit: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "rep.html").exists()
    return err


def test_model_file_errors(tmp_path, files, capsys):
    data = files / "data.npz"
    good = (files / "model.keras").read_bytes()
    _expect_usage_error(
        capsys,
        tmp_path,
        tmp_path / "none.keras",
        data,
        "no such file",
        f"Received: --model={tmp_path / 'none.keras'}",
    )
    _expect_usage_error(
        capsys, tmp_path, tmp_path, data, "not a directory", f"Received: --model={tmp_path}"
    )
    half = tmp_path / "half.keras"
    half.write_bytes(good[: len(good) // 2])
    _expect_usage_error(capsys, tmp_path, half, data, "is not (it is truncated", "half.keras")
    noise = tmp_path / "noise.keras"
    noise.write_bytes(np.random.default_rng(0).bytes(2000))
    err = _expect_usage_error(capsys, tmp_path, noise, data, "a .keras file is a zip archive")
    assert "File not found" not in err  # what Keras itself says
    other = tmp_path / "model.pt"
    other.write_bytes(good)
    _expect_usage_error(capsys, tmp_path, other, data, 'model.save("model.keras")')
    # a zip archive, but not a Keras model
    bad_zip = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.writestr("config.json", "{not json")
    _expect_usage_error(
        capsys, tmp_path, bad_zip, data, "--model must be a Keras model file", "reading it failed"
    )


def test_data_file_errors(tmp_path, files, capsys):
    model = files / "model.keras"
    X = np.zeros((3, 4), "float32")
    y = np.zeros(3, int)
    _expect_usage_error(
        capsys,
        tmp_path,
        model,
        tmp_path / "none.npz",
        "no such file",
        f"Received: --data={tmp_path / 'none.npz'}",
    )
    _expect_usage_error(capsys, tmp_path, model, tmp_path, "not a directory")
    good = (files / "data.npz").read_bytes()
    half = tmp_path / "half.npz"
    half.write_bytes(good[: len(good) // 2])
    _expect_usage_error(capsys, tmp_path, model, half, "truncated or corrupt", "half.npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _expect_usage_error(capsys, tmp_path, model, empty, "--data must be an .npz file")
    ragged = np.array([[1.0], [1.0, 2.0], [3.0]], dtype=object)
    np.savez(tmp_path / "objects.npz", x_private=ragged, y_private=y, x_public=X, y_public=y)
    _expect_usage_error(
        capsys, tmp_path, model, tmp_path / "objects.npz", "'x_private' is an object array"
    )
    np.savez(tmp_path / "missing.npz", x_private=X, y_private=y)
    _expect_usage_error(
        capsys,
        tmp_path,
        model,
        tmp_path / "missing.npz",
        "Missing: x_public, y_public",
        "with the arrays x_private, y_private",
    )
    np.save(tmp_path / "single.npy", X)
    _expect_usage_error(capsys, tmp_path, model, tmp_path / "single.npy", "not a single array")
    (tmp_path / "pickled.npz").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    _expect_usage_error(capsys, tmp_path, model, tmp_path / "pickled.npz", "may be a pickle")


def test_unreadable_files(tmp_path, files, capsys, monkeypatch):
    data = tmp_path / "data.npz"
    data.write_bytes((files / "data.npz").read_bytes())
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self == data:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "open", refuse)
        _expect_usage_error(
            capsys, tmp_path, files / "model.keras", data, "can be read (Permission denied)"
        )
    if os.name != "posix" or os.geteuid() == 0:
        return  # root reads files whatever their mode
    data.chmod(0)
    try:
        _expect_usage_error(capsys, tmp_path, files / "model.keras", data, "Permission denied")
    finally:
        data.chmod(0o600)


def test_a_file_error_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "half.npz").write_bytes(b"PK\x03\x04 truncated")
    result = _run(
        "-m",
        "kmi",
        "audit",
        "--model",
        str(tmp_path / "m.keras"),
        "--data",
        str(tmp_path / "half.npz"),
        "--modality",
        "image",
        "--output",
        str(tmp_path / "r"),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kmi audit: --data must be an .npz file")
    assert "Traceback" not in result.stderr


def test_no_tensorflow_log_lines_unless_verbose(tmp_path, files):
    # the model loads (so Keras, the attacks and TensorFlow are imported), then the
    # audit stops: a Dense model is not a text model
    np.savez(tmp_path / "t.npz", secrets=np.array(["a secret"]), prompts=np.array(["a"]))
    argv = [
        "-m",
        "kmi",
        "audit",
        "--model",
        str(files / "model.keras"),
        "--data",
        str(tmp_path / "t.npz"),
        "--modality",
        "text",
        "--output",
        str(tmp_path / "r"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    # only the usage error: no "I0000 ... cudart_stub.cc" or absl lines
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("kmi audit: --modality text needs a kmi text model"), line
