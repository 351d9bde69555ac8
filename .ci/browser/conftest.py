"""Fixtures of the browser tests: the example server (a short access-token TTL), a
second origin for the CSRF test, Debian's Chromium through Playwright, and a screenshot
of every failing test's pages in $SENTRI_BROWSER_ARTIFACTS."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

# Generous bounds, only so that a bug cannot hang CI (a loaded 2-core machine runs the
# suite in parallel with the Rust tests): no assertion is about speed.
expect.set_options(timeout=60_000)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = pathlib.Path(os.environ.get("SENTRI_BROWSER_ARTIFACTS", ROOT / "target" / "browser-artifacts"))
CHROMIUM = os.environ.get("SENTRI_CHROMIUM", "/usr/bin/chromium")
ACCESS_TTL_SECS = 2


class Server:
    def __init__(self, url, proc, log):
        self.url, self.proc, self.log = url, proc, log

    def call(self, method, path, body=None, headers=None):
        """One request from outside the browser: (status, JSON body, response headers)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, json.load(res), res.headers
        except urllib.error.HTTPError as err:
            return err.code, json.load(err), err.headers


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("SENTRI_EXAMPLE_BIN", str(ROOT / "target" / "debug" / "examples" / "server"))
    tmp = tempfile.mkdtemp(prefix="sentri-browser-")
    log = open(os.path.join(tmp, "server.log"), "w+")
    env = dict(
        os.environ,
        SENTRI_ADDR="127.0.0.1:0",
        DATABASE_URL=f"sqlite://{tmp}/demo.db?mode=rwc",
        SENTRI_SECRET="browser-secret-browser-secret-browser-secret",
        SENTRI_BCRYPT_COST="4",
        SENTRI_ACCESS_TTL=f"{ACCESS_TTL_SECS}s",
        SENTRI_2FA_KEY=base64.b64encode(bytes(range(32))).decode(),
        RUST_LOG="warn",
    )
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = None
    for _ in range(600):
        log.seek(0)
        for line in log.read().splitlines():
            if line.startswith("listening on http://"):
                url = line.removeprefix("listening on ").strip()
        if url or proc.poll() is not None:
            break
        time.sleep(0.1)
    if not url:
        proc.kill()
        log.seek(0)
        raise RuntimeError("the example server did not start:\n" + log.read())
    yield Server(url, proc, log)
    proc.terminate()
    proc.wait(timeout=30)


class Evil(http.server.BaseHTTPRequestHandler):
    """The other origin: one page that tries to use the demo's cookies."""

    page = (pathlib.Path(__file__).parent / "evil.html").read_bytes()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def other_origin():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser, request):
    ctx = browser.new_context()
    ctx.set_default_timeout(60_000)
    yield ctx
    if getattr(request.node, "failed", False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(ctx.pages):
            path = ARTIFACTS / f"{request.node.name}-{i}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of the failure: {path}")
            except Exception as err:  # a crashed page: the other screenshots still count
                print(f"no screenshot of page {i}: {err}")
    ctx.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True


def totp(secret_b32, at=None):
    """RFC 6238 (SHA-1, 6 digits, 30 s), as authenticator apps compute it."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    step = int((at or time.time()) // 30)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def pytest_sessionstart(session):
    print(f"browser test artefacts (failure screenshots): {ARTIFACTS}")
