"""Rendering of a Report as one self-contained HTML page."""

from __future__ import annotations

import html
import math

from kmi.audit._png import png_data_uri

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.25em .55em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.baseline td{background:#f7f7ff}.pos{color:#b00020;font-weight:600}.neg{color:#2e7d32}
#summary li{margin:.3em 0}.grid{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;text-align:center;font-size:.75em}figure img{image-rendering:pixelated;
width:72px;height:auto;border:1px solid #ccc;display:block}
.note{color:#555;font-size:.9em}
"""


def _cell(key, value):
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


def _table(rows, columns):
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = ' class="baseline"' if "Baseline" in str(row.get("attack", "")) else ""
        body.append(f"<tr{cls}>" + "".join(_cell(c, row.get(c, "")) for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_GROUP_KEYS = ("target", "sensitive", "split")


def render_html(report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        '<section id="summary"><h2>Summary</h2>',
    ]
    if report.summary:
        parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in report.summary)
                     + "</ul>")
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
            columns = [c for c in rows[0] if c not in keys]
            parts.append(f"<h3>{html.escape(title)}</h3>{_table(rows, columns)}")
    parts.append("</section>")

    if report.figures:
        parts.append('<section id="figures"><h2>Reconstructions</h2>')
        for fig in report.figures:
            parts.append(f"<h3>{html.escape(fig['title'])}</h3><div class=\"grid\">")
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
