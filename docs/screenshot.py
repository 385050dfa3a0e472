"""Retake docs/playground.png: the playground of the model in data/model, in headless Chromium.

    .venv/bin/python docs/screenshot.py            # after `make run`; needs Debian's chromium
"""
from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from charrnn.serve import server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the playground tests drive the same browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(model: Path = ROOT / "data" / "model", out: Path = ROOT / "docs" / "playground.png") -> None:
    with server.spawn(model, "--chunk", "20") as s, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 840}, device_scale_factor=1, bypass_csp=True)
        page.goto(s.url + "/")
        page.wait_for_function("!document.getElementById('model-name').textContent.startsWith('loading')")
        page.fill("#seed", "7")
        page.click("#generate")
        page.wait_for_selector("#status[data-state=done]", timeout=120_000)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
