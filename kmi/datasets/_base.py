"""Where data sets live, and how they are fetched when there is a network."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The folder kmi reads data sets from.

    ``data_home`` if given, else the ``KMI_DATA`` environment variable, else
    ``~/kmi_data``. The folder is not created here.

    Parameters
    ----------
    data_home : str or path-like, default=None
        A folder; ``~`` is expanded.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from kmi.datasets import get_data_home
    >>> get_data_home("shared/data").as_posix()
    'shared/data'
    """
    if data_home is None:
        data_home = os.environ.get("KMI_DATA", Path.home() / "kmi_data")
    return Path(data_home).expanduser()


def fetch_file(url: str, path: Path, *, name: str, download: bool = True) -> Path:
    """Return ``path``, downloading ``url`` to it first if it does not exist.

    The download goes to a temporary file renamed into place, so an interrupted
    download never leaves a partial file behind.

    Parameters
    ----------
    url : str
        Where the file is downloaded from.
    path : pathlib.Path
        Where it is kept.
    name : str
        What the file is, for the error message.
    download : bool, default=True
        Whether a missing file may be downloaded.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileNotFoundError
        If the file is missing and cannot be downloaded (``download=False`` or no
        network), with the path where it is expected and where to get it.
    """
    path = Path(path)
    if path.exists():
        return path
    hint = (
        f"{name} was not found at {path}. Download {url} and save it there, or pass "
        "data_home= (or set KMI_DATA) to a folder that holds it."
    )
    if not download:
        raise FileNotFoundError(f"{hint} Received: download=False")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - fixed URL
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(response, fh)
        os.replace(tmp, path)
    except OSError as exc:
        raise FileNotFoundError(f"{hint} The download failed: {exc}") from exc
    return path
