"""The HTML report in a real headless chromium: it loads, every image decodes, no console errors.

How: a copy of the page gets a small probe script at the top of <head>. It records uncaught errors,
failed resource loads (``error`` events in the capture phase) and ``console.error``/``warn`` calls,
and on ``load`` writes a JSON status (including every <img>'s ``naturalWidth``) into a body attribute.
``chromium --headless --dump-dom`` prints the DOM after load, so the status comes back on stdout.
Console messages chromium itself emits appear as ``CONSOLE`` lines on stderr
(``--enable-logging=stderr``): the report has no scripts, so any such line is a failure too.
A control page with a broken image and a script error checks that the probe does catch both.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lossyvision.report.build import build_report
from report_data import make_output

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get update && apt-get install -y chromium)"),
]

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target || {};
    errors.push(t.tagName ? ('resource ' + t.tagName + ' ' + String(t.src || t.href).slice(0, 80))
                          : ('uncaught ' + e.message));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('rejection ' + e.reason); });
  ['error', 'warn'].forEach(function (k) {
    var orig = console[k];
    console[k] = function () { errors.push('console.' + k + ' ' + Array.prototype.join.call(arguments, ' '));
                               return orig.apply(console, arguments); };
  });
  window.addEventListener('load', function () {
    var imgs = Array.prototype.map.call(document.images, function (im) {
      return {complete: im.complete, width: im.naturalWidth, src: im.src.slice(0, 40)};
    });
    document.body.setAttribute('data-lv-status', JSON.stringify({loaded: true, errors: errors, images: imgs}));
  });
})();
</script>"""


def render(page: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Load ``page`` (with the probe) in headless chromium: (status, chromium's console lines)."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'data-lv-status="([^"]*)"', proc.stdout)
    assert match, f"no status in the DOM (rc={proc.returncode}); stderr tail:\n{proc.stderr[-2000:]}"
    status = json.loads(html_lib.unescape(match.group(1)))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return status, console


def test_report_renders_in_headless_chromium(tmp_path):
    out = make_output(tmp_path)
    res = build_report(str(out))
    status, console = render(Path(res.index_html), tmp_path)
    assert status["loaded"]
    assert status["errors"] == []
    assert console == [], console
    assert len(status["images"]) == len(res.figures) >= 6
    broken = [im for im in status["images"] if not (im["complete"] and im["width"] > 0)]
    assert broken == []


def test_probe_catches_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    '<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>')
    status, console = render(page, tmp_path)
    assert status["images"] and status["images"][0]["width"] == 0
    assert any("resource IMG" in e for e in status["errors"])
    assert any("console.error boom" in e for e in status["errors"])
    assert any("boom" in line for line in console)
