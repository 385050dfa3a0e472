"""`dvc plots show` as dvc.yaml and .dvc/ ship it, opened in Debian's chromium with every request
that is not the page itself refused: one plot per quantity, a point per epoch, labelled axes, whole
epochs on the x axis, at desktop and phone sizes. Screenshots go to $CHARRNN_SCREENSHOTS (else
tmp_path)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docs.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import unavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def plotted_project(root: Path, epochs: int) -> Path:
    """The project's dvc.yaml and .dvc/ (config, templates, page) with a training history of `epochs`."""
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    (root / "metrics").mkdir()
    rows = range(1, epochs + 1)
    (root / "metrics" / "history.csv").write_text(
        "epoch,loss,val_loss\n" + "".join(f"{e},{2.5 / e:.4f},{2.7 / e:.4f}\n" for e in rows))
    (root / "metrics" / "throughput.csv").write_text(
        "epoch,seconds,chars_per_sec\n" + "".join(f"{e},10.0,{9000 + 100 * e}\n" for e in rows))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def show(root: Path) -> Path:
    proc = subprocess.run([str(Path(sys.prefix) / "bin" / "dvc"), "plots", "show"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = root / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    return page


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        unavailable("Debian's chromium is not installed (/usr/bin/chromium; `apt-get install chromium`, as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_offline(browser, page_path: Path, viewport: str):
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    page.refused = []

    def only_the_page(route):
        if route.request.url == page_path.as_uri():
            route.continue_()
        else:
            page.refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_page)
    page.goto(page_path.as_uri())
    page.wait_for_function("document.querySelectorAll('.vega-embed svg').length === 2", timeout=30_000)
    return page


def texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.textContent)")


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("epochs", [1, 3])
def test_the_plots_render_offline_one_per_quantity_with_points_and_labelled_axes(browser, tmp_path, epochs, viewport):
    page = open_offline(browser, show(plotted_project(tmp_path, epochs)), viewport)
    shots = Path(os.environ.get("CHARRNN_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / f"plots-{epochs}-epochs-{viewport}.png"), full_page=True)
    assert page.refused == []
    titles = texts(page, ".vega-embed svg .role-title-text")
    assert titles == ["Loss per epoch", "Training speed"]
    axis_titles = texts(page, ".vega-embed svg .role-axis-title text")
    assert axis_titles == ["epoch", "loss (nats per character)", "epoch", "characters per second"]
    ticks = texts(page, ".vega-embed svg .role-axis[aria-label^='X-axis'] .role-axis-label text")
    assert ticks and all(tick.isdigit() for tick in ticks), ticks  # whole epochs only
    assert "1" in ticks and (epochs == 1 or str(epochs) in ticks)
    points = page.eval_on_selector_all(".vega-embed", "divs => divs.map(d => d.querySelectorAll('.mark-symbol.role-mark path').length)")
    assert points == [2 * epochs, epochs]  # loss and val_loss, then characters per second
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
