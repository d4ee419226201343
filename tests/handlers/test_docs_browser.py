"""/docs and /redoc in a real headless browser (Debian's chromium) with no way out but 127.0.0.1:
the pages render the operations, a screenshot is not blank, no request leaves the loopback, and
"Authorize" then "Try it out" runs the admin reload and a tabular prediction from its example.

Every name outside resolves to nothing and every other connection goes to a proxy that refuses,
so a page that needed a CDN would stay blank here."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.network import SERVER_TOKEN, free_port, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium"
ADMIN_TOKEN = "docs-admin-token"
BROWSER_TIMEOUT_S = 30.0
WAIT_S = 15.0
# Swagger UI: one opblock per operation, tagged with its path.
OPERATIONS = ("/api/v1/predict", "/api/v1/models", "/health", "/api/v1/admin/reload")
# ReDoc: one heading per operation, anchored by its operation id.
REDOC_HEADINGS = {
    "predict_api_v1_predict_post": "Run texts or instances through a model",
    "models_api_v1_models_get": "List models and versions",
    "reload_api_v1_admin_reload_post": "Re-read the model registry",
    "health_health_get": "Health",
}


def _chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make system-tools`, or `{INSTALL}`)")
    return CHROMIUM


def _offline_flags(profile: Path) -> list[str]:
    refusing_proxy = free_port()  # nothing listens there; loopback bypasses proxies by default
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{refusing_proxy}",
    ]


@pytest.fixture(scope="module")
def docs_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _chromium()
    log_path = tmp_path_factory.mktemp("docs-browser") / "server.log"
    process, base_url = start_server(log_path, ADMIN_TOKEN=ADMIN_TOKEN, CACHE_BACKEND="memory")
    try:
        yield base_url
    finally:
        stop_server(process)


def _run_chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(_chromium()), *_offline_flags(tmp_path / f"profile-{name}"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _dump_dom(tmp_path: Path, url: str, name: str) -> str:
    return _run_chromium(tmp_path, name, "--virtual-time-budget=15000", "--dump-dom", url).stdout


def test_swagger_ui_renders_every_operation_offline(docs_server: str, tmp_path: Path) -> None:
    dom = _dump_dom(tmp_path, f"{docs_server}/docs", "swagger")
    assert 'class="swagger-ui' in dom, dom[-2000:]
    for path in OPERATIONS:
        assert f'data-path="{path}"' in dom, f"no operation {path} in the rendered /docs:\n{dom[-3000:]}"
    assert dom.count('class="opblock opblock-') >= 8, dom[-3000:]
    assert "Failed to load API definition" not in dom


def test_redoc_renders_every_operation_offline(docs_server: str, tmp_path: Path) -> None:
    dom = _dump_dom(tmp_path, f"{docs_server}/redoc", "redoc")
    for operation, heading in REDOC_HEADINGS.items():
        pattern = rf'<h2[^>]*><a [^>]*href="#tag/[^"/]+/operation/{operation}"[^>]*></a>{re.escape(heading)}\s*</h2>'
        assert re.search(pattern, dom), f"no operation heading {heading!r} in the rendered /redoc:\n{dom[-3000:]}"
    assert "/api/v1/admin/reload" in dom


def _not_blank(png: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels unlike the most common one) of a screenshot."""
    try:
        from PIL import Image
    except ImportError:
        pytest.fail("Pillow is missing: pip install pillow (matplotlib brings it)")
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        counts = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
        total = rgb.width * rgb.height
    background = max((count for count, _ in counts), default=total)
    return len(counts), 1 - background / total


def test_docs_screenshot_is_not_blank(docs_server: str, tmp_path: Path) -> None:
    shot = tmp_path / "docs.png"
    _run_chromium(tmp_path, "shot", "--virtual-time-budget=15000", f"--screenshot={shot}", f"{docs_server}/docs")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    colours, drawn = _not_blank(shot)
    assert colours > 50 and drawn > 0.05, f"{shot}: {colours} colours, {drawn:.1%} of the pixels drawn: blank"


# Driving the page: the DevTools protocol over a WebSocket, as a person would click.


@dataclass
class _Page:
    socket: ClientConnection
    requests: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=WAIT_S))
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            if message.get("id") == message_id:
                if "error" in message:
                    pytest.fail(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
        pytest.fail(f"{method}: no answer within {WAIT_S} s")

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            pytest.fail(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"not within {WAIT_S} s: {what}")

    def click(self, selector: str, what: str) -> None:
        self.wait_for(f"!!document.querySelector({json.dumps(selector)})", what)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)


@pytest.fixture()
def page(docs_server: str, tmp_path: Path) -> Iterator[_Page]:
    profile = tmp_path / "profile-devtools"
    command = [str(_chromium()), *_offline_flags(profile), "--remote-debugging-port=0", "about:blank"]
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + BROWSER_TIMEOUT_S
        while not port_file.is_file() or not port_file.read_text().strip():
            if browser.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not open its DevTools port (exit {browser.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        target = next(t for t in targets if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=WAIT_S) as socket:
            opened = _Page(socket)
            opened.call("Network.enable")
            opened.call("Runtime.enable")
            yield opened
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=5)


def _authorize(page: _Page) -> None:
    """The "Authorize" dialog: the API token and the admin token, each with its own button."""
    page.click(".auth-wrapper .authorize", "the Authorize button")
    for scheme, token in (("X-Admin-Token", ADMIN_TOKEN), ("X-Token", SERVER_TOKEN)):
        container = (
            "[...document.querySelectorAll('.modal-ux .auth-container')]"
            f".find(c => [...c.querySelectorAll('code, p, h4')].some(e => e.textContent.includes({json.dumps(scheme)})))"
        )
        page.wait_for(f"!!{container}", f"the {scheme} field in the Authorize dialog")
        page.evaluate(f"{container}.querySelector('input').focus()")
        page.call("Input.insertText", text=token)
        page.evaluate(f"{container}.querySelector('button.authorize').click()")
        page.wait_for(f"{container}.querySelector('h6')?.textContent === 'Authorized'", f"{scheme} authorized")
    page.click(".modal-ux .btn-done, .modal-ux .close-modal", "the dialog's close button")


def _try_it_out(page: _Page, block: str) -> None:
    page.click(f"{block} .opblock-summary-control", f"{block} opened")
    page.click(f"{block} .try-out__btn", f"{block} Try it out")


def _execute(page: _Page, block: str) -> tuple[str, str, str]:
    """Execute, then (status, response body, curl command) as the page shows them."""
    page.click(f"{block} .btn.execute", f"{block} Execute")
    status = page.wait_for(
        f"document.querySelector('{block} .live-responses-table tr.response .response-col_status')?.textContent.trim()", f"{block} answered"
    )
    body = page.evaluate(f"document.querySelector('{block} .live-responses-table tr.response .response-col_description pre')?.textContent")
    curl = page.evaluate(f"document.querySelector('{block} .curl')?.textContent")
    return str(status), str(body), str(curl)


def test_authorize_then_try_it_out_runs_admin_and_tabular_requests(docs_server: str, page: _Page, tmp_path: Path) -> None:
    page.call("Page.navigate", url=f"{docs_server}/docs")
    page.wait_for("document.querySelectorAll('.opblock').length >= 8", "the operations rendered")
    _authorize(page)

    reload = "[id^=operations-operations-reload]"
    _try_it_out(page, reload)
    status, body, curl = _execute(page, reload)
    assert status == "200", (status, body)
    assert json.loads(body)["ok"] is True and f"X-Admin-Token: {ADMIN_TOKEN}" in curl, curl

    predict = "[id^=operations-inference-predict]"
    _try_it_out(page, predict)
    select = f"document.querySelector('{predict} .opblock-section-request-body .examples-select select')"
    names = page.wait_for(f"{select} && [...{select}.options].map(o => o.value)", "the request examples drop-down")
    assert {"text_classification", "tabular", "embedding", "pinned_version"} <= set(names), names
    page.evaluate(
        f"(() => {{ const s = {select};"
        " Object.getOwnPropertyDescriptor(HTMLSelectElement.prototype, 'value').set.call(s, 'tabular');"
        " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )
    page.wait_for(f"document.querySelector('{predict} textarea.body-param__text')?.value.includes('instances')", "the tabular example")
    status, body, curl = _execute(page, predict)
    assert status == "200", (status, body)
    answer = json.loads(body)
    assert answer["model"] == "iris" and [r["prediction"] for r in answer["results"]] == ["setosa", "virginica"], answer
    assert f"X-Token: {SERVER_TOKEN}" in curl, curl

    page.evaluate(f"document.querySelector('{predict} .opblock-section-request-body').scrollIntoView()")
    shot = page.call("Page.captureScreenshot", format="png")
    (tmp_path / "docs-tried.png").write_bytes(base64.b64decode(shot["data"]))
    outside = sorted({url for url in page.requests if urlsplit(url).hostname not in {"127.0.0.1", None} and not url.startswith("data:")})
    assert outside == [], f"the page asked for outside hosts: {outside}"
