"""The playground page in a real browser: Debian's chromium, driven by Playwright, against a real
`charrnn serve` process on 127.0.0.1. Screenshots go to $CHARRNN_SCREENSHOTS (else tmp_path)."""
import os
from pathlib import Path

import httpx
import pytest

from charrnn.serve import app as serve_app
from tests.kit import SERVE_VOCAB, saved_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTINGS = {"temperature": 0.9, "num_chars": 2000, "top_k": 5, "top_p": 0.95, "seed": 42}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium; "
                                                     "`apt-get install chromium`, as CI does)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("playground")
    model = saved_model(directory / "model", SERVE_VOCAB, units=32, layers=2)
    with serve_app.spawn(model, "--chunk", "10", log_path=directory / "server.log") as spawned:
        yield spawned


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """The page, loaded with its model card; every URL it asks for is recorded."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(f"{server.url}/")
    page.wait_for_function("document.getElementById('model-name').textContent.startsWith('/')")
    yield page
    page.close()


def screenshots(tmp_path) -> Path:
    directory = Path(os.environ.get("CHARRNN_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_generate_streams_the_same_text_as_the_api(page, server, tmp_path):
    assert page.text_content("#card").count("unknown") >= 3  # a model with no run: corpus, bpc, run unknown
    assert page.input_value("#num_chars") == "200" and page.input_value("#seed") == "0"  # the card's defaults
    page.fill("#prompt", "ROMEO:")
    for name, value in SETTINGS.items():
        page.fill(f"#{name}", str(value))
    # every change to the text while it arrives: (characters shown, whether the stream had ended)
    page.evaluate("""() => {
        window.seen = [];
        const output = document.getElementById('output'), status = document.getElementById('status');
        new MutationObserver(() => window.seen.push([output.textContent.length, status.dataset.state === 'done']))
            .observe(output, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#generate")
    page.wait_for_selector("#status[data-state=done]", timeout=60_000)
    shown = page.text_content("#output")
    page.screenshot(path=str(screenshots(tmp_path) / "playground-generated.png"), full_page=True)

    api = httpx.post(f"{server.url}/v1/generate", json={"prompt": "ROMEO:", **SETTINGS}, timeout=60).json()
    assert shown == api["texts"][0] and len(shown) == len("ROMEO:") + 2000
    assert page.text_content("#output .prompt") == "ROMEO:"
    partial = {n for n, done in page.evaluate("window.seen") if 0 < n < len(shown) and not done}
    assert len(partial) >= 2, "the text appeared all at once, not as it streamed"
    assert page.text_content("#error") == ""
    assert page.text_content("#status").startswith("done: 2000 characters")
    assert all(url.startswith(server.url) for url in page.requested), page.requested


def test_an_empty_prompt_shows_the_apis_error(page, server, tmp_path):
    page.fill("#prompt", "")
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    page.screenshot(path=str(screenshots(tmp_path) / "playground-error.png"), full_page=True)
    api = httpx.post(f"{server.url}/v1/generate", json={"prompt": ""}).json()["error"]
    assert page.text_content("#error") == api and "prompt 0 is empty" in api
    assert page.text_content("#output") == ""
    assert page.is_disabled("#stop")
