"""report.html in headless Chromium: every image loads, nothing reaches the console, and a
screenshot shows a rendered page. Needs the Debian package `chromium` (skipped without it)."""

import re
import shutil
import subprocess

import matplotlib.image
import pytest

from finetune.studies import evaluate

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="`chromium` is not on PATH (apt-get install -y chromium)")

# Appended to a copy of the page: after load, count the images that decoded.
PROBE = (
    "<script>addEventListener('load', () => { const ok = [...document.images].filter("
    "i => i.complete && i.naturalWidth > 0); document.body.dataset.images = "
    "ok.length + '/' + document.images.length; });</script>"
)


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def studied_run(demo_run, tmp_path_factory):
    """The demo run with every study section (durations, rare classes, mistakes with a saliency map)."""
    run_dir = tmp_path_factory.mktemp("studied") / "run"
    shutil.copytree(demo_run, run_dir)
    evaluate(run_dir, durations=[2], explain=1, saliency_grid=(4, 2.0))
    return run_dir


def test_report_loads_every_image_without_console_messages(studied_run, tmp_path):
    html = (studied_run / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources), "self-contained"
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert f'data-images="{len(sources)}/{len(sources)}"' in result.stdout
    assert "Most confidently wrong test tracks" in result.stdout
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_report_screenshot_shows_a_rendered_page(studied_run, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", (studied_run / "report.html").as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[:2] == (2400, 1200)
    assert pixels.std() > 0.05, "not a blank page"
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005, "dark text and plot lines are drawn"
