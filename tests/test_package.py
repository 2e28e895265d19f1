"""The project's hard rules, checked."""

import re
from pathlib import Path

import kmi

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    first, second = _code_blocks(readme)[:2]
    assert "kmi audit --demo" in first and "pip install" in first
    assert "pytest" in second and "KERAS_BACKEND=tensorflow" in second
    assert "KERAS_BACKEND=jax" in second and "TF_ENABLE_ONEDNN_OPTS=0" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second in ci.splitlines()


def test_top_level_layout():
    allowed = {
        "setup.cfg",
        "pyproject.toml",
        "README.md",
        "kmi",
        "tests",
        "examples",
        "benchmarks",
        ".ci",
        ".git",
        ".gitignore",
    }
    ignored = {".venv", "venv", ".pytest_cache", ".ruff_cache", "build", "dist"}
    extra = {p.name for p in ROOT.iterdir()} - allowed - ignored
    extra = {n for n in extra if not n.endswith(".egg-info") and not n.startswith("kmi-report")}
    assert not extra, f"unexpected top-level entries: {sorted(extra)}"


def test_no_legacy_keras_or_keras2_only_libraries():
    banned = re.compile(
        r"^\s*(import|from)\s+(tensorflow_privacy|spektral|tf_keras)\b|tf\.keras\b", re.M
    )
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("kmi", "examples", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
        if banned.search(p.read_text())
    ]
    assert not offenders


def test_backend_specific_imports_stay_in_kmi_backend():
    pattern = re.compile(r"^\s*(import|from)\s+(tensorflow|jax)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "kmi").rglob("*.py")
        if "backend" not in p.relative_to(ROOT / "kmi").parts and pattern.search(p.read_text())
    ]
    assert not offenders, offenders


def test_version_and_lazy_namespaces():
    assert kmi.__version__
    assert kmi.attacks.CSMIA.__name__ == "CSMIA"


def test_run_all_rebuilds_results_md(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    out = run_all.write_results(tmp_path / "RESULTS.md", status={"graph_cora": (0, 1.0)})
    text = out.read_text()
    for name in run_all.BENCHMARKS:
        assert f"## {name}" in text
    assert "Last run by run_all.py: exit 0, 1.0 s." in text
    # every results file in the repository is rendered
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        if any(path.name in files for _, files, *_ in run_all.BENCHMARKS.values()):
            assert f"### {path.name}" in text
    assert "| a | b |" in "\n".join(run_all._table([{"a": 1, "b": 2.5}]))


def test_gan_benchmark_attack_selection_fails_loudly():
    import importlib.util

    import pytest

    path = ROOT / "benchmarks" / "image_gan.py"
    spec = importlib.util.spec_from_file_location("image_gan", path)
    image_gan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_gan)
    rows = dict.fromkeys(["GMI", "GMI+LOMMA(aug)", "BREPMI (label-only)", "MIFace"])
    select = image_gan.select_attacks
    assert list(select(rows, "", 5)) == list(rows)
    assert list(select(rows, "", 0)) == ["GMI", "BREPMI (label-only)", "MIFace"]
    assert list(select(rows, "MIFace,BREPMI", 0)) == ["BREPMI (label-only)", "MIFace"]
    with pytest.raises(SystemExit, match="unknown \\['LOMMA'\\]"):
        select(rows, "GMI,LOMMA", 5)
    with pytest.raises(SystemExit, match="--lomma-aug"):
        select(rows, "GMI+LOMMA(aug)", 0)
