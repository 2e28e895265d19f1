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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
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
    verdicts : list of dict
        Per model: ``risk`` (high / medium / low), ``why`` (one sentence), the
        best counted attack, its ``advantage`` over the baseline and its 95 %
        ``interval`` (the rule: :mod:`kmi.audit.verdict`).
    texts : list of dict
        Recovered texts beside the originals (:meth:`add_texts`).
    """

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    summary: list[str] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    texts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = [{k: v for k, v in f.items() if k != "images"} for f in self.figures]
        return out

    def add_figure(self, title: str, images, captions=None, note: str = "") -> None:
        """Add a grid of images (values in [0, 1]) shown in the HTML report.

        Parameters
        ----------
        title : str
        images : sequence of arrays of shape (H, W), (H, W, 1) or (H, W, 3)
        captions : sequence of str, default=None
        note : str, default=""
            A sentence under the grid.
        """
        images = list(images)
        captions = list(captions) if captions is not None else [""] * len(images)
        if len(captions) != len(images):
            raise ValueError(
                "add_figure needs one caption per image. "
                f"Received: {len(images)} images and {len(captions)} captions"
            )
        self.figures.append({"title": title, "images": images, "captions": captions, "note": note})

    def add_texts(self, title: str, originals, recovered, note: str = "") -> None:
        """Add recovered texts beside the private originals (a two-column table).

        Parameters
        ----------
        title : str
        originals, recovered : sequence of str
            Of the same length.
        note : str, default=""
            A sentence under the table.
        """
        originals, recovered = [str(t) for t in originals], [str(t) for t in recovered]
        if len(originals) != len(recovered):
            raise ValueError(
                "add_texts needs one recovered text per original. "
                f"Received: {len(originals)} originals and {len(recovered)} recovered"
            )
        self.texts.append(
            {"title": title, "pairs": [list(p) for p in zip(originals, recovered)], "note": note}
        )

    def add_plot(
        self, title: str, points, *, x_label: str, y_label: str, note: str = "", lines: bool = True
    ) -> None:
        """Add a scatter plot (drawn as inline SVG in the HTML report).

        Parameters
        ----------
        title : str
        points : sequence of dict
            Each with ``x``, ``y`` (numbers) and ``label`` (str); points sharing a
            ``series`` value are joined by a line.
        x_label, y_label : str
        note : str, default=""
            A sentence under the plot.
        lines : bool, default=True
            Join the points of a series by a line (in order of ``x``). Only for points
            that lie on one curve, such as a defense at several strengths; models that
            are unrelated are drawn as points.
        """
        clean = []
        for p in points:
            x, y = float(p["x"]), float(p["y"])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"add_plot needs finite coordinates. Received: point {p!r}")
            clean.append({**p, "x": x, "y": y, "label": str(p.get("label", ""))})
        self.plots.append(
            {
                "title": title,
                "points": clean,
                "x_label": x_label,
                "y_label": y_label,
                "note": note,
                "lines": bool(lines),
            }
        )

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
        columns = columns or [
            k
            for k in dict.fromkeys(k for r in self.rows for k in r)
            if k != group and not k.startswith("_")
        ]
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
        if self.verdicts:
            lines += ["## Verdict", ""]
            lines += [f"- **{v['target']}: {v['risk']} risk.** {v['why']}." for v in self.verdicts]
            lines.append("")
            from kmi.audit.verdict import sweep_rows

            sweep = sweep_rows(self.verdicts)
            if sweep:
                lines += [Report(title="", rows=sweep, versions={}).table(), ""]
        if self.summary:
            lines += ["## Summary", ""] + [f"- {line}" for line in self.summary] + [""]
        if self.settings:
            lines += ["## Settings", ""]
            lines += [f"- {k}: {v}" for k, v in self.settings.items()]
            lines.append("")
        lines += ["## Results", "", self.table(), ""]
        for block in self.texts:
            lines += [f"## {block['title']}", "", "| Private text | Recovered |", "|---|---|"]
            lines += [
                f"| {a.replace('|', '/')} | {b.replace('|', '/')} |" for a, b in block["pairs"]
            ]
            lines += ([block["note"]] if block.get("note") else []) + [""]
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in self.versions.items())]
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write(path, text)
        return text

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """One self-contained HTML page: summary first, then tables, figures, settings.

        Images are embedded as PNG data URIs, so the file can be mailed on its own.
        Written atomically to ``path`` when given.
        """
        from kmi.audit._html import render_html

        text = render_html(self)
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
