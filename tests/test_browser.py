"""The built site in a real browser: Debian's headless Chromium driven by Playwright, served on localhost."""

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Debian's chromium here and in .ci/run; a hosted runner's preinstalled Chrome elsewhere.
CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run should have installed Debian's chromium package.")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(built):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built.site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _pages(built):
    return sorted(p.relative_to(built.site).as_posix() for p in built.site.rglob("*.html") if p.name != "404.html")


def test_every_page_loads_with_its_images_and_nothing_from_elsewhere(browser, server, built):
    shots = built.root / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = _pages(built)
    assert len(pages) >= 7
    for page_path in pages:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, outside = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def guard(route):
            if urlparse(route.request.url).hostname not in ("127.0.0.1", "localhost"):
                outside.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", guard)
        page.goto(f"{server}/{page_path}", wait_until="load")
        # Lazy images and images in hidden tabs load once asked to, as they would when scrolled to or clicked.
        page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
        broken = page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).map(i => i.src)")
        assert not broken, (page_path, broken)
        assert not outside, (page_path, outside)
        assert not errors, (page_path, errors)
        page.screenshot(path=str(shots / (page_path.replace("/", "_") + ".png")), full_page=True)
        page.close()
    assert len(list(shots.glob("*.png"))) == len(pages)


def test_theme_toggle_switches_to_dark_and_back(browser, server):
    page = browser.new_page()
    page.goto(f"{server}/index.html")
    scheme = lambda: page.evaluate("document.body.getAttribute('data-md-color-scheme')")  # noqa: E731
    first = scheme()
    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function(f"document.body.getAttribute('data-md-color-scheme') !== '{first}'")
    assert {first, scheme()} == {"default", "slate"}
    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function(f"document.body.getAttribute('data-md-color-scheme') === '{first}'")
    page.close()


def test_search_finds_a_page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server}/index.html")
    page.locator("input.md-search__input").click()
    page.keyboard.type("Grad-CAM", delay=50)  # Material searches on key events, not on a bare value change
    page.wait_for_selector(".md-search-result__item", timeout=20_000)
    assert page.locator(".md-search-result__item").count() > 0
    page.close()
