"""The HTML report renders in a real browser (headless Chromium).

.ci/run installs Debian's ``chromium`` and sets KMI_REQUIRE_BROWSER=1, so there the
test cannot be skipped; elsewhere it is skipped when no Chromium is installed.
"""

import json
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from kmi.audit import Report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# Appended to a copy of the report: after load, record what the page shows.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute("data-probe", JSON.stringify({
    summary: document.querySelectorAll("#summary li").length,
    tables: document.querySelectorAll("#results table").length,
    images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    svg: document.querySelectorAll("svg.plot circle").length,
    errors: window.__errors,
    verdict: document.querySelectorAll("#verdict li").length,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    wideTables: Array.from(document.querySelectorAll("table"))
      .filter(t => t.getBoundingClientRect().right > window.innerWidth + 1).length,
  }));
});
</script>"""


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("KMI_REQUIRE_BROWSER") == "1":
        pytest.fail("KMI_REQUIRE_BROWSER=1 but no Chromium found; apt-get install chromium")
    pytest.skip("no Chromium installed (apt-get install chromium)")


def _run(browser, tmp_path, *args):
    profile = tmp_path / "profile"
    cmd = [
        browser,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _png_pixels(path):
    """Decode an 8-bit RGB/RGBA PNG (no interlacing) into an array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    out = np.zeros((height, width * bpp), dtype=np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros_like(line)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) % 256
        else:
            row = np.zeros_like(line)
            for x in range(len(line)):
                a = row[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[x] = (line[x] + pred) % 256
            out[y] = row
    return out.reshape(height, width, bpp)[..., :3]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    long_setting = "; ".join(
        f"{name} {{'max_iter': 500, 'learning_rate': 0.1, 'optimizer': 'adam'}}"
        for name in ("MIFace", "DeepInversion", "InversionModel", "GMI", "BREPMI")
    )
    report = Report(
        title="kmi privacy audit: browser check",
        settings={"seed": 0, "attack parameters": long_setting, "a_very_long_key" * 8: 1},
        summary=["model: the strongest attack rebuilds 7 of 10 classes."],
        # a sweep's verdicts: the table of models, defenses and strengths must fit too
        verdicts=[
            {
                "target": f"{defense} ({strength})" if strength else defense,
                "risk": risk,
                "why": "GMI rebuilds 7 of 10 classes recognisably, against 1 of 10 for "
                "the baseline that never queries the model",
                "attack": "InversionModel",
                "metric": "top_1",
                "success": 0.7,
                "baseline": 0.1,
                "advantage": 0.6,
                "interval": [0.3, 0.8],
                "defense": defense,
                "strength": strength,
                "utility": 0.961,
            }
            for defense, strength, risk in [
                ("no defense", None, "high"),
                ("DP-SGD", "epsilon 0.99", "medium"),
                ("MID (information bottleneck)", "beta 0.01", "low"),
            ]
        ],
    )
    # rows as wide as an image audit's: every metric column, and the instance ones
    metrics = {
        "access": "white-box", "classes": 10, "top_1": 0.7, "top_5": 0.9,
        "knn_distance": 123.456, "nn_accuracy": 0.6, "nearest_mse": 0.0312,
        "adversarial": False, "instance_top_1": 0.985, "instance_psnr": 13.7,
        "instance_ssim": 0.612, "fit_s": 1234.567, "invert_s": 98.765, "queries": 123456,
    }  # fmt: skip
    report.rows = [
        {
            "target": "DP-SGD (epsilon 3.0)",
            "task": "reconstruct classes",
            "split": "members",
            "attack": name,
            **metrics,
        }
        for name in ("PublicMeanBaseline", "GMI")
    ]
    rng = np.random.default_rng(0)
    report.add_figure(
        "model: GMI", [rng.random((16, 16)) for _ in range(4)], [f"class {i}" for i in range(4)]
    )
    report.add_plot(
        "trade-off",
        [
            {"x": 0.96, "y": 0.7, "label": "no defense", "series": "GMI"},
            {"x": 0.80, "y": 0.2, "label": "DP-SGD", "series": "GMI"},
        ],
        x_label="test accuracy",
        y_label="attack top-1",
    )
    path = tmp / "report.html"
    report.to_html(path)
    return path


def test_report_renders_in_chromium(report_html, tmp_path):
    browser = _browser()
    text = report_html.read_text()
    assert "<script" not in text  # a static page: nothing runs when it is opened
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    result = _run(
        browser,
        tmp_path,
        "--virtual-time-budget=5000",
        "--window-size=1100,1400",
        "--dump-dom",
        probed.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    marker = 'data-probe="'
    start = result.stdout.index(marker) + len(marker)
    raw = result.stdout[start : result.stdout.index('"', start)]
    probe = json.loads(raw.replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["summary"] == 1 and probe["tables"] >= 1
    assert probe["images"] == 4 and probe["decoded"] == 4  # no broken image
    assert probe["svg"] == 2
    assert probe["errors"] == []
    assert probe["verdict"] == 3
    # nothing is wider than a 1,100 px window: no sideways scrolling, no hidden column
    assert probe["innerWidth"] == 1100, probe
    assert probe["scrollWidth"] <= probe["innerWidth"] and probe["wideTables"] == 0, probe
    console = [
        line
        for line in result.stderr.splitlines()
        if "CONSOLE" in line and "probe" not in line.lower()
    ]
    assert console == [], console


def test_report_screenshot_is_not_blank(report_html, tmp_path):
    browser = _browser()
    shot = tmp_path / "shot.png"
    result = _run(
        browser, tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", report_html.as_uri()
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = _png_pixels(shot)
    assert pixels.shape[:2] == (1400, 1000)
    ink = (pixels.min(axis=2) < 200).mean()
    assert 0.005 < ink < 0.6  # text, tables and images drawn on a white page
