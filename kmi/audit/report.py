"""The result of an audit: rows of measured attack results, with their settings."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def library_versions() -> dict[str, str]:
    """Versions of kmi and the libraries that shape its results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("kmi", "keras", "tensorflow", "jax", "scikit-learn", "numpy", "dp-accounting"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import keras

        out["keras_backend"] = keras.backend.backend()
    except ImportError:  # pragma: no cover
        pass
    return out


def atomic_write(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}"
    return str(value)


@dataclass
class Report:
    """Measured results of a privacy audit.

    Attributes
    ----------
    title : str
    rows : list of dict
        One per (target, attacked attribute, attack, records attacked): the metrics,
        the advantage over the baseline, wall time and query count.
    settings : dict
        What was attacked and how (data sizes, seeds, models).
    versions : dict
        Library versions.
    """

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The report as JSON; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=_json_default, allow_nan=True)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    def table(self, columns: list[str] | None = None, group: str | None = None) -> str:
        """Rows as a Markdown table (one table per value of ``group``)."""
        if not self.rows:
            return "(no results)"
        columns = columns or [k for k in self.rows[0] if k != group]
        groups: dict[Any, list] = {}
        for row in self.rows:
            groups.setdefault(row.get(group) if group else None, []).append(row)
        parts = []
        for key, rows in groups.items():
            if group:
                parts.append(f"\n{group}: {key}\n")
            parts.append("| " + " | ".join(columns) + " |")
            parts.append("|" + "|".join("---" for _ in columns) + "|")
            for row in rows:
                parts.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
        return "\n".join(parts)

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as Markdown; written atomically to ``path`` when given."""
        lines = [f"# {self.title}", ""]
        if self.settings:
            lines += ["## Settings", ""]
            lines += [f"- {k}: {v}" for k, v in self.settings.items()]
            lines.append("")
        lines += ["## Results", "", self.table(), ""]
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in self.versions.items())]
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write(path, text)
        return text


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
