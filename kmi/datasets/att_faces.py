"""The AT&T (formerly ORL) Database of Faces: 40 subjects x 10 grey images, 112x92."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from kmi.datasets._base import fetch_file, get_data_home

ATT_FACES_URL = "https://www.cl.cam.ac.uk/Research/DTG/attarchive/pub/data/att_faces.zip"
N_SUBJECTS = 40
N_IMAGES = 10

__all__ = ["load_att_faces", "read_pgm"]


def read_pgm(path: str | os.PathLike) -> np.ndarray:
    """Read a binary (P5) or plain (P2) PGM file into a 2-D ``uint8``/``uint16`` array.

    Parameters
    ----------
    path : str or path-like
        The image file.

    Returns
    -------
    ndarray of shape (height, width)
        ``uint16`` when the header's maximum value is above 255, else ``uint8``.

    Raises
    ------
    ValueError
        If the file is not a PGM image or is truncated.

    Examples
    --------
    >>> import os, tempfile
    >>> from kmi.datasets.att_faces import read_pgm
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.pgm")
    >>> with open(path, "wb") as fh:
    ...     _ = fh.write(b"P5 3 2 255 " + bytes([0, 1, 2, 3, 4, 255]))
    >>> read_pgm(path).tolist()
    [[0, 1, 2], [3, 4, 255]]
    """
    data = Path(path).read_bytes()
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":  # comment to end of line
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            break
        tokens.append(data[start:pos])
    if len(tokens) < 4 or tokens[0] not in (b"P5", b"P2"):
        raise ValueError(f"Expected a PGM image (magic P5 or P2). Received: path={str(path)!r}")
    width, height, maxval = (int(t) for t in tokens[1:4])
    if tokens[0] == b"P2":
        values = np.array(data[pos:].split(), dtype=np.int64)
    else:
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        values = np.frombuffer(data, dtype=dtype, offset=pos + 1)
    if values.size < width * height:
        raise ValueError(
            f"PGM file holds {values.size} pixels, its header announces {width}x{height}. "
            f"Received: path={str(path)!r}"
        )
    out_dtype = np.uint16 if maxval > 255 else np.uint8
    return values[: width * height].reshape(height, width).astype(out_dtype)


def _folder(data_home, download: bool) -> Path:
    root = get_data_home(data_home) / "att_faces"
    if (root / "s1" / "1.pgm").exists():
        return root
    archive = fetch_file(
        ATT_FACES_URL,
        get_data_home(data_home) / "att_faces.zip",
        name="The AT&T Database of Faces",
        download=download,
    )
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            name = Path(member)
            # Only sX/Y.pgm (and the README), never paths leaving the folder.
            if name.is_absolute() or ".." in name.parts:
                continue
            parts = [p for p in name.parts if p not in ("att_faces", "orl_faces")]
            if not parts or member.endswith("/"):
                continue
            dest = root.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(member))
    if not (root / "s1" / "1.pgm").exists():
        raise FileNotFoundError(
            f"The archive {archive} did not contain sX/Y.pgm images. Received: path={str(root)!r}"
        )
    return root


def load_att_faces(
    data_home: str | os.PathLike | None = None,
    *,
    return_X_y: bool = False,
    download: bool = True,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load the AT&T Database of Faces (400 images of 40 subjects, 112x92 grey).

    Images are read from ``<data_home>/att_faces/sX/Y.pgm`` (X = 1..40, Y = 1..10);
    when missing, the zip archive is downloaded from AT&T Laboratories Cambridge's
    archive (if ``download``) and unpacked there.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.
    download : bool, default=True
        Download the archive when the images are missing.

    Returns
    -------
    Bunch with ``images`` (float32, shape (400, 112, 92, 1), values in [0, 1], NHWC),
    ``target`` (subject index 0..39: folder ``s1`` is 0), ``image_index`` (0..9:
    file ``1.pgm`` is 0) and ``DESCR``; or ``(images, target)`` with ``return_X_y``.
    Rows are ordered by subject, then image.

    Raises
    ------
    FileNotFoundError
        If the images are missing and cannot be downloaded.

    References
    ----------
    F. Samaria and A. Harter. Parameterisation of a stochastic model for human face
    identification. IEEE Workshop on Applications of Computer Vision (1994). Credit:
    AT&T Laboratories Cambridge. The model-inversion data set of M. Fredrikson, S. Jha
    and T. Ristenpart, CCS 2015.

    Examples
    --------
    >>> from kmi.datasets import load_att_faces
    >>> # reads att_faces/sX/Y.pgm under data_home
    >>> faces = load_att_faces(data_home="../shared/data")  # doctest: +SKIP
    >>> faces.images.shape  # doctest: +SKIP
    (400, 112, 92, 1)
    """
    root = _folder(data_home, download)
    images, target, index = [], [], []
    for subject in range(1, N_SUBJECTS + 1):
        for image in range(1, N_IMAGES + 1):
            path = root / f"s{subject}" / f"{image}.pgm"
            if not path.exists():
                raise FileNotFoundError(
                    f"The AT&T faces folder {root} is incomplete: {path} is missing. Delete "
                    f"the folder to download it again. Received: data_home={str(data_home)!r}"
                )
            pixels = read_pgm(path)
            images.append(pixels.astype("float32") / float(np.iinfo(pixels.dtype).max))
            target.append(subject - 1)
            index.append(image - 1)
    images = np.stack(images)[..., None]
    target = np.asarray(target, dtype=np.int64)
    if return_X_y:
        return images, target
    return Bunch(
        images=images,
        target=target,
        image_index=np.asarray(index, dtype=np.int64),
        DESCR=load_att_faces.__doc__,
    )
