"""Rendering of a Report as one self-contained HTML page."""

from __future__ import annotations

import html
import math

from kmi.audit._png import png_data_uri

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em;max-width:100%}
th,td{border:1px solid #d0d0d0;padding:.25em .45em;text-align:right;overflow-wrap:anywhere}
th{font-weight:600;vertical-align:bottom}
#settings table{width:100%;table-layout:fixed}#settings td{text-align:left}
#settings td:first-child{width:34%}
details{margin:.4em 0 1em}dt{font-weight:600}dd{margin:0 0 .4em 1.2em}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.baseline td{background:#f7f7ff}.pos{color:#b00020;font-weight:600}.neg{color:#2e7d32}
#summary li{margin:.3em 0}.grid{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;text-align:center;font-size:.75em}figure img{image-rendering:pixelated;
width:72px;height:auto;border:1px solid #ccc;display:block}
.note{color:#555;font-size:.9em}svg.plot{background:#fff;border:1px solid #ddd}
svg.plot text{font-size:11px;fill:#333}
.risk-high strong{color:#b00020}.risk-medium strong{color:#a15c00}.risk-low strong{color:#2e7d32}
table.sweep td:nth-child(-n+3),table.sweep th:nth-child(-n+3),
table.sweep td:nth-child(5),table.sweep th:nth-child(5){text-align:left}
tr.risk-high td:last-child{color:#b00020;font-weight:600}
tr.risk-medium td:last-child{color:#a15c00;font-weight:600}
tr.risk-low td:last-child{color:#2e7d32;font-weight:600}
"""


def _cell(key, value):
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        if math.isnan(value):
            return "<td>n/a</td>"
        text = f"{value:.3f}"
        if key.startswith("adv"):
            cls = "pos" if value > 0.005 else "neg" if value < -0.005 else ""
            text = f"{value:+.3f}"
            return f'<td class="{cls}">{text}</td>'
        return f"<td>{text}</td>"
    return f"<td>{html.escape(str(value))}</td>"


#: Column headers and what they mean, for the fields the audits write.
COLUMNS = {
    "attack": ("Attack", "The attack, or the baseline that never queries the model."),
    "access": ("Access", "What the attack used: white-box, black-box, label-only or none."),
    "classes": ("Classes", "Classes attacked (one image is rebuilt per class)."),
    "top_1": (
        "Top-1",
        "Share of rebuilt images that an independent evaluation classifier assigns to "
        "the attacked class (chance is 1 / classes).",
    ),
    "top_5": ("Top-5", "As top-1, counting the evaluator's five best guesses."),
    "knn_distance": (
        "KNN dist.",
        "Squared distance, in the evaluator's feature space, from each rebuilt image to "
        "the nearest private image of its class (lower: closer to real data).",
    ),
    "nn_accuracy": (
        "NN acc.",
        "Share of rebuilt images whose nearest private image is of the attacked class.",
    ),
    "nearest_mse": (
        "Pixel MSE",
        "Mean squared pixel difference to the nearest private image of any class, in "
        "[0, 1] pixels (lower: closer to real data).",
    ),
    "adversarial": (
        "Adversarial?",
        "Yes: the images fool the evaluator but are farther from every private image "
        "than the mean public image is; not counted as leakage.",
    ),
    "instance_top_1": (
        "Inst. top-1",
        "Top-1 of images rebuilt from the model's answers on private images (one per image).",
    ),
    "instance_psnr": (
        "Inst. PSNR (dB)",
        "Peak signal-to-noise ratio of those images against the originals (higher: closer).",
    ),
    "instance_ssim": (
        "Inst. SSIM",
        "Structural similarity of those images to the originals (1: identical).",
    ),
    "fit_s": ("Fit (s)", "Seconds spent fitting the attack (priors, surrogates)."),
    "invert_s": ("Attack (s)", "Seconds spent rebuilding the images."),
    "queries": ("Queries", "Rows sent to the model."),
    "accuracy": ("Accuracy", "Share of records whose attribute the attack recovers."),
    "auc": ("AUC", "Area under the ROC curve (0.5: chance)."),
    "ap": ("AP", "Average precision."),
}


def column_label(key: str) -> str:
    """The header of a column: a name a person reads, not the field's."""
    if key in COLUMNS:
        return COLUMNS[key][0]
    if key.startswith("adv_"):
        return f"Advantage ({key[4:].replace('_', ' ')})"
    return key.replace("_", " ").capitalize()


def _glossary(columns) -> str:
    known = [c for c in columns if c in COLUMNS]
    if not known:
        return ""
    items = "".join(
        f"<dt>{html.escape(COLUMNS[c][0])}</dt><dd>{html.escape(COLUMNS[c][1])}</dd>"
        for c in known
    )
    return f"<details><summary>What the columns mean</summary><dl>{items}</dl></details>"


def _table(rows, columns):
    head = "".join(f"<th>{html.escape(column_label(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cls = ' class="baseline"' if "Baseline" in str(row.get("attack", "")) else ""
        body.append(f"<tr{cls}>" + "".join(_cell(c, row.get(c, "")) for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_GROUP_KEYS = ("target", "sensitive", "task", "split")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n)]


def render_svg_plot(plot, width=720, height=380) -> str:
    """A scatter plot as inline SVG: labelled points, series joined by lines."""
    pts = plot["points"]
    left, right, top, bottom = 60, 190, 20, 50
    xs = [p["x"] for p in pts] or [0.0]
    ys = [p["y"] for p in pts] or [0.0]
    pad_x = (max(xs) - min(xs)) * 0.1 or 0.05
    pad_y = (max(ys) - min(ys)) * 0.1 or 0.05
    x0, x1 = min(xs) - pad_x, max(xs) + pad_x
    y0, y1 = max(0.0, min(ys) - pad_y), max(ys) + pad_y
    if max(ys) <= 1.0 and min(ys) >= 0.0:  # rates: keep the axis within [0, 1]
        y1 = min(y1, 1.0)
    w, h = width - left - right, height - top - bottom

    def sx(v):
        return left + (v - x0) / (x1 - x0) * w

    def sy(v):
        return top + h - (v - y0) / (y1 - y0) * h

    out = [
        f'<svg class="plot" width="{width}" '
        f'height="{height}" role="img" aria-label="{html.escape(plot["title"])}">',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
    ]
    for v in _ticks(x0, x1):
        out.append(
            f'<line x1="{sx(v):.1f}" y1="{top + h}" x2="{sx(v):.1f}" '
            f'y2="{top + h + 4}" stroke="#999"/><text x="{sx(v):.1f}" '
            f'y="{top + h + 16}" text-anchor="middle">{v:.2f}</text>'
        )
    for v in _ticks(y0, y1):
        out.append(
            f'<line x1="{left - 4}" y1="{sy(v):.1f}" x2="{left}" y2="{sy(v):.1f}" '
            f'stroke="#999"/><text x="{left - 6}" y="{sy(v) + 4:.1f}" '
            f'text-anchor="end">{v:.2f}</text>'
        )
    out.append(
        f'<text x="{left + w / 2}" y="{height - 10}" text-anchor="middle">'
        f"{html.escape(plot['x_label'])}</text>"
    )
    out.append(
        f'<text transform="translate(14,{top + h / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(plot["y_label"])}</text>'
    )
    series: dict = {}
    named = set()  # (x, label) of the points already labelled: each is named once
    placed: list = []  # boxes of the labels drawn, which later labels must not cover

    def free_y(x, y, text):
        """The first of a few heights near (x, y) where ``text`` covers no label."""
        width = 6.5 * len(text)
        for dy in (-8, 16, -20, 28, -32, 40):
            box = (x, y + dy - 11, x + width, y + dy + 2)
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                placed.append(box)
                return y + dy
        return y - 8

    for p in pts:
        series.setdefault(p.get("series", p["label"]), []).append(p)
    for i, (name, group) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        if len(series) > 1:  # legend, right of the plot
            ly = top + 14 + 18 * i
            out.append(
                f'<circle cx="{left + w + 16}" cy="{ly - 4}" r="5" fill="{color}"/>'
                f'<text x="{left + w + 26}" y="{ly}">{html.escape(str(name))}</text>'
            )
        group = sorted(group, key=lambda p: p["x"])
        if len(group) > 1 and plot.get("lines", True):
            path = " ".join(f"{sx(p['x']):.1f},{sy(p['y']):.1f}" for p in group)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}"/>')
        for p in group:
            out.append(
                f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="5" '
                f'fill="{color}"><title>{html.escape(p["label"])}: '
                f"({p['x']:.3f}, {p['y']:.3f})</title></circle>"
            )
            if (p["x"], p["label"]) not in named:
                named.add((p["x"], p["label"]))
                ty = free_y(sx(p["x"]) + 6, sy(p["y"]), p["label"])
                out.append(
                    f'<text x="{sx(p["x"]) + 6:.1f}" y="{ty:.1f}" '
                    f'style="fill:{color}">{html.escape(p["label"])}</text>'
                )
    out.append("</svg>")
    return "".join(out)


def render_html(report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.verdicts:  # the verdict first (the rule: kmi.audit.verdict)
        parts.append('<section id="verdict"><h2>Verdict</h2><ul>')
        for v in report.verdicts:
            parts.append(
                f'<li class="risk-{html.escape(v["risk"])}"><strong>'
                f"{html.escape(str(v['target']))}: {html.escape(v['risk'])} risk.</strong> "
                f"{html.escape(v['why'])}.</li>"
            )
        parts.append("</ul>")
        from kmi.audit.verdict import sweep_rows

        sweep = sweep_rows(report.verdicts)
        if sweep:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in sweep[0])
            body = "".join(
                f'<tr class="risk-{html.escape(r["Risk"])}">'
                + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values())
                + "</tr>"
                for r in sweep
            )
            parts.append(
                f'<table class="sweep"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            )
        parts.append("</section>")
    parts.append('<section id="summary"><h2>Summary</h2>')
    if report.summary:
        parts.append(
            "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in report.summary) + "</ul>"
        )
    else:
        parts.append("<p>No attack was run.</p>")
    parts.append("</section>")

    parts.append('<section id="results"><h2>Results</h2>')
    if report.rows:
        keys = [k for k in _GROUP_KEYS if k in report.rows[0]]
        groups: dict[tuple, list] = {}
        for row in report.rows:
            groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
        for key, rows in groups.items():
            title = ", ".join(f"{k}: {v}" for k, v in zip(keys, key))
            columns = [
                c
                for c in dict.fromkeys(k for r in rows for k in r)
                if c not in keys and not c.startswith("_")
            ]
            parts.append(f"<h3>{html.escape(title)}</h3>{_table(rows, columns)}")
        every = dict.fromkeys(k for r in report.rows for k in r if not k.startswith("_"))
        parts.append(_glossary(every))
    parts.append("</section>")

    if report.plots:
        parts.append('<section id="tradeoffs"><h2>Utility against attack success</h2>')
        for plot in report.plots:
            parts.append(f"<h3>{html.escape(plot['title'])}</h3>{render_svg_plot(plot)}")
            if plot.get("note"):
                parts.append(f'<p class="note">{html.escape(plot["note"])}</p>')
        parts.append("</section>")

    if report.texts:
        parts.append('<section id="texts"><h2>Recovered texts</h2>')
        for block in report.texts:
            rows = "".join(
                f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>"
                for a, b in block["pairs"]
            )
            parts.append(
                f"<h3>{html.escape(block['title'])}</h3><table><thead><tr><th>Private text"
                f"</th><th>Recovered</th></tr></thead><tbody>{rows}</tbody></table>"
            )
            if block.get("note"):
                parts.append(f'<p class="note">{html.escape(block["note"])}</p>')
        parts.append("</section>")

    if report.figures:
        parts.append('<section id="figures"><h2>Reconstructions</h2>')
        for fig in report.figures:
            parts.append(f'<h3>{html.escape(fig["title"])}</h3><div class="grid">')
            for image, caption in zip(fig["images"], fig["captions"]):
                parts.append(
                    f'<figure><img alt="{html.escape(caption or fig["title"])}" '
                    f'src="{png_data_uri(image)}"><figcaption>{html.escape(caption)}'
                    "</figcaption></figure>"
                )
            parts.append("</div>")
            if fig.get("note"):
                parts.append(f'<p class="note">{html.escape(fig["note"])}</p>')
        parts.append("</section>")

    parts.append('<section id="settings"><h2>Settings</h2><table><tbody>')
    for k, v in report.settings.items():
        parts.append(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>")
    parts.append("</tbody></table>")
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    parts.append(f'<p class="note">Versions: {html.escape(versions)}</p></section>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
