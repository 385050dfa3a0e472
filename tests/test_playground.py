"""The playground page in a real browser: Debian's chromium, driven by Playwright, against a real
`charrnn serve` process on 127.0.0.1, at a desktop and a phone viewport; and what a page of
another origin can make the server do (nothing). Screenshots go to $CHARRNN_SCREENSHOTS (else
tmp_path)."""
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from charrnn.serve import server as serve_server
from docs.screenshot import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import unavailable
from tests.kit import SERVE_VOCAB, saved_model

SETTINGS = {"temperature": 0.9, "num_chars": 2000, "top_k": 5, "top_p": 0.95, "seed": 42}
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
KEY = "playground-key"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def chromium_is_there():
    if not CHROMIUM.exists():
        unavailable("Debian's chromium is not installed (/usr/bin/chromium; `apt-get install chromium`, as .ci/run does)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("playground") / "model", SERVE_VOCAB, units=32, layers=2)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    with serve_server.spawn(model, "--chunk", "10", log_path=tmp_path_factory.mktemp("logs") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str, viewport: str):
    """The page, loaded with its model card; every URL it asks for is recorded."""
    # bypass_csp: Playwright's waits evaluate strings, which the page's CSP forbids (its headers are
    # tested in test_serve_guard.py; the framing case below runs without the bypass)
    page = browser.new_page(viewport=VIEWPORTS[viewport], device_scale_factor=1, bypass_csp=True)
    page.requested, page.failed = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("response", lambda response: page.failed.append(response.url) if response.status >= 400 else None)
    page.goto(f"{url}/")
    page.wait_for_function("document.getElementById('model-name').textContent === 'model'")
    return page


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, server):
    page = open_page(browser, server.url, request.param)
    page.viewport = request.param
    yield page
    page.close()


def screenshots(tmp_path) -> Path:
    directory = Path(os.environ.get("CHARRNN_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_generate_streams_the_same_text_as_the_api(page, server, tmp_path):
    assert page.text_content("#card").count("unknown") >= 3  # a model with no run: corpus, bpc, run unknown
    assert page.input_value("#num_chars") == "500" and page.input_value("#seed") == "7"  # the card's defaults
    assert page.input_value("#prompt") != ""  # the model's own default prompt, not "ROMEO:" for every model
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
    page.screenshot(path=str(screenshots(tmp_path) / f"playground-generated-{page.viewport}.png"))

    api = httpx.post(f"{server.url}/v1/generate", json={"prompt": "ROMEO:", **SETTINGS}, timeout=60).json()
    assert shown == api["texts"][0] and len(shown) == len("ROMEO:") + 2000
    assert page.text_content("#output .prompt") == "ROMEO:"
    partial = {n for n, done in page.evaluate("window.seen") if 0 < n < len(shown) and not done}
    assert len(partial) >= 2, "the text appeared all at once, not as it streamed"
    assert page.text_content("#error") == ""
    assert page.text_content("#status").startswith("done: 2000 characters")
    assert all(url.startswith(server.url) for url in page.requested), page.requested
    assert page.failed == [] and f"{server.url}/favicon.ico" not in page.requested  # the icon is linked


def test_after_generate_the_text_is_in_view_and_the_page_scrolls(page, tmp_path):
    page.fill("#prompt", "ROMEO:")
    page.fill("#num_chars", "2000")
    page.click("#generate")
    page.wait_for_selector("#status[data-state=done]", timeout=60_000)
    page.wait_for_timeout(600)  # the smooth scroll
    box = page.locator("#output").bounding_box()
    height = VIEWPORTS[page.viewport]["height"]
    visible = min(box["y"] + box["height"], height) - max(box["y"], 0)
    line = 21  # 14 px at line-height 1.5
    assert visible >= 10 * line, f"only {visible:.0f} px of text visible"
    assert page.evaluate("document.scrollingElement.scrollHeight > window.innerHeight")
    page.mouse.wheel(0, 3000)
    page.wait_for_timeout(300)
    assert page.evaluate("window.scrollY") > 0
    page.screenshot(path=str(screenshots(tmp_path) / f"playground-scrolled-{page.viewport}.png"))


def test_nothing_overflows_and_the_card_breaks_no_word(page, tmp_path):
    width = VIEWPORTS[page.viewport]["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # every word of the card's values stays on one line (long ids may wrap, words may not)
    broken = page.evaluate("""() => [...document.querySelectorAll('#card dd:not(.id)')].filter(dd => {
        const range = document.createRange(), words = [];
        const text = dd.textContent;
        let offset = 0;
        for (const word of text.split(' ')) {
            range.setStart(dd.firstChild, offset); range.setEnd(dd.firstChild, offset + word.length);
            if (range.getClientRects().length > 1) words.push(word);
            offset += word.length + 1;
        }
        return words.length > 0;
    }).map(dd => dd.textContent)""")
    assert broken == []
    page.screenshot(path=str(screenshots(tmp_path) / f"playground-card-{page.viewport}.png"), full_page=True)


def test_the_number_boxes_take_the_servers_limits(page, server):
    limits = httpx.get(f"{server.url}/v1/model").json()["limits"]
    assert page.get_attribute("#num_chars-range", "max") == str(limits["max_chars"]) == "10000"
    assert float(page.get_attribute("#temperature", "min")) == limits["settings"]["temperature"]["min"] == 1e-6
    page.fill("#temperature", "0")  # below the server's floor: refused on the page, nothing is sent
    sent = len(page.requested)
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    assert "Temperature must be from 0.000001 to 100" in page.text_content("#error")
    assert not [u for u in page.requested[sent:] if u.endswith("/v1/generate")]


def test_an_empty_prompt_shows_the_apis_error(page, server, tmp_path):
    page.fill("#prompt", "")
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    page.screenshot(path=str(screenshots(tmp_path) / f"playground-error-{page.viewport}.png"))
    api = httpx.post(f"{server.url}/v1/generate", json={"prompt": ""}).json()["error"]
    assert page.text_content("#error") == api and "at least 1 character" in api
    assert page.text_content("#output") == ""
    assert page.is_disabled("#stop")


def test_with_an_api_key_the_page_asks_for_it_once(browser, model, tmp_path):
    with serve_server.spawn(model, "--api-key", KEY, log_path=tmp_path / "keyed.log") as keyed:
        page = browser.new_page(viewport=VIEWPORTS["phone"], bypass_csp=True)
        page.goto(f"{keyed.url}/")
        page.wait_for_selector("#key-box:not([hidden])")
        assert "needs an API key" in page.text_content("#error")
        page.fill("#api-key", "wrong")
        page.click("#use-key")
        page.wait_for_selector("#key-box:not([hidden])")
        page.fill("#api-key", KEY)
        page.click("#use-key")
        page.wait_for_function("document.getElementById('model-name').textContent === 'model'")
        page.fill("#prompt", "ROMEO:")
        page.fill("#num_chars", "50")
        page.click("#generate")
        page.wait_for_selector("#status[data-state=done]", timeout=60_000)
        page.reload()  # the same tab: the key is remembered, not asked again
        page.wait_for_function("document.getElementById('model-name').textContent === 'model'")
        assert page.is_hidden("#key-box")
        page.screenshot(path=str(screenshots(tmp_path) / "playground-key-phone.png"))
        page.close()
    assert KEY not in (tmp_path / "keyed.log").read_text()


class Attacker(BaseHTTPRequestHandler):
    """A page on another origin (another port of this machine) that tries every way a page can
    reach a loopback server: a no-cors fetch of text/plain, a form, a JSON fetch, an iframe."""

    target = ""

    def do_GET(self):
        page = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{self.target}/v1/generate" enctype="text/plain" target="sink">
<input name='{{"prompt": "ROMEO:", "num_chars": 5000, "x": "' value='"}}'></form>
<iframe name="sink"></iframe><iframe id="framed" src="{self.target}/"></iframe>
<script>
window.results = {{}};
fetch("{self.target}/v1/generate", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({{prompt: "ROMEO:", num_chars: 5000}})}})
  .then(() => window.results.nocors = "sent").catch(e => window.results.nocors = "error");
fetch("{self.target}/v1/generate", {{method: "POST", headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{prompt: "ROMEO:", num_chars: 5000}})}})
  .then(r => r.text()).then(t => window.results.json = t).catch(e => window.results.json = "blocked");
fetch("{self.target}/v1/model").then(r => r.text()).then(t => window.results.card = t)
  .catch(e => window.results.card = "blocked");
document.getElementById("f").submit();
</script></body></html>"""
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_on_another_origin_cannot_make_the_server_generate(browser, server, tmp_path):
    before = httpx.get(f"{server.url}/v1/stats").json()
    Attacker.target = server.url
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_function("window.results && ['nocors', 'json', 'card'].every(k => k in window.results)",
                               timeout=30_000)
        page.wait_for_timeout(1500)  # the form's POST too
        results = page.evaluate("window.results")
        framed = page.frame_locator("#framed").locator("#generate").count()
        page.screenshot(path=str(screenshots(tmp_path) / "attacker.png"))
        page.close()
    finally:
        httpd.shutdown()
    after = httpx.get(f"{server.url}/v1/stats").json()
    assert after["requests_served"] == before["requests_served"] and after["chars_generated"] == before["chars_generated"]
    assert results["json"] == "blocked" and results["card"] == "blocked"  # no CORS: the page reads nothing
    assert after["refused"].get("origin", 0) - before["refused"].get("origin", 0) >= 3
    assert framed == 0  # the playground refuses to be framed
