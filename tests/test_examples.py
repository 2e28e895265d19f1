"""Every script in examples/ runs, with tiny settings (KMI_QUICK=1).

Each script runs in this process (``runpy``, as ``__main__``): a subprocess per
script paid about 10 s of imports each, on each backend.

They run on TensorFlow (the default backend). On JAX they are ``jax_slow``, left out
unless ``-m slow``: there they took about 120 s in all, three quarters of it
compiling, and the unit tests reach every kmi line they reach (measured with
coverage's per-test contexts).
"""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.jax_slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KMI_QUICK", "1")
    monkeypatch.chdir(tmp_path)  # anything a script writes stays in the test's folder
    monkeypatch.setattr("sys.argv", [str(script)])
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out  # every example prints its result
