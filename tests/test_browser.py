"""The built site in a real browser: Debian's headless Chromium driven by Playwright, served on localhost."""

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

# One xdist worker builds the tiny site (the session fixture `built`) for every test that reads it.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("built")]

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
        assert page.evaluate("window.xss") is None, (page_path, "script from the data ran")
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


def built_cell_limit(built):
    import json

    return json.loads((built.site_assets / "cls" / "metrics.json").read_text())["cell_images"]


def _data(built, model):
    from pipeline.figures.explorer import read_data_script

    return read_data_script(built.site_assets / model / "explorer.js")


def _guarded_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(r.url)
            if urlparse(r.url).scheme in ("http", "https")
            and urlparse(r.url).hostname not in ("127.0.0.1", "localhost")
            else None)
    page.goto(url, wait_until="load")
    return page, problems


def _lines(page):
    return page.evaluate("""[...document.querySelectorAll('.attention-line')].filter(l =>
        getComputedStyle(l).display !== 'none').map(l => [+l.dataset.head, +l.dataset.query, +l.dataset.key,
        +l.getAttribute('stroke-opacity')])""")


def test_attention_explorer_draws_the_json_weights_and_hover_isolates_a_token(browser, server, built):
    data = _data(built, "mt")["attention"]
    page, problems = _guarded_page(browser, f"{server}/generated/transformer.html")
    page.wait_for_selector(".attention-line", state="attached")
    # A sentence whose output has a word (a smoke model may answer some with nothing but <eos>).
    n = next(i for i, example in enumerate(data) if len(example["target_tokens"]) > 1)
    page.select_option("select[name=example]", str(n))
    page.select_option("select[name=kind]", "decoder_source")
    page.select_option("select[name=head]", "all")
    weights = data[n]["weights"]["decoder_source"][0]  # layer 1: [head][query][key]
    drawn = _lines(page)
    assert len(drawn) == sum(len(row) for head in weights for row in head)
    page.hover(".attention-token[data-side=query][data-index='1']")
    shown = _lines(page)
    assert shown and all(q == 1 for _, q, _, _ in shown)
    for head, query, key, opacity in shown:
        assert opacity == pytest.approx(weights[head][query][key], abs=1e-4)
    page.mouse.move(0, 0)
    assert len(_lines(page)) == len(drawn)
    before = _lines(page)
    page.select_option("select[name=head]", "0")
    assert {h for h, *_ in _lines(page)} == {0} and _lines(page) != before
    one_head = _lines(page)
    page.select_option("select[name=layer]", str(len(data[n]["weights"]["decoder_source"]) - 1))
    layer_last = _lines(page)
    page.select_option("select[name=kind]", "encoder_self")
    encoder = _lines(page)
    assert len(encoder) == len(data[n]["source_tokens"]) ** 2 and encoder != layer_last
    assert len(one_head) == len(layer_last)
    assert not problems, problems
    page.close()


def test_decode_table_searches_and_sorts_every_sentence(browser, server, built):
    decodes = _data(built, "mt")["decodes"]
    page, problems = _guarded_page(browser, f"{server}/generated/transformer.html")
    page.wait_for_selector(".decode-table tbody tr")
    assert page.locator(".decode-table tbody tr").count() == len(decodes)
    word = decodes[0]["source"].split()[0]
    page.fill(".decode-search", word)
    expected = [d for d in decodes if any(word.lower() in (" · ".join(v) if isinstance(v, list) else str(v)).lower()
                                          for k, v in d.items() if k in ("source", "references", "greedy", "beam",
                                                                         "bleu", "chrf"))]
    assert page.locator(".decode-table tbody tr").count() == len(expected) > 0
    page.fill(".decode-search", "")
    page.click(".decode-table th[data-key=bleu]")
    shown = [float(x) for x in page.locator(".decode-table td[data-key=bleu]").all_inner_texts()]
    assert shown == sorted(shown)
    page.click(".decode-table th[data-key=bleu]")
    shown = [float(x) for x in page.locator(".decode-table td[data-key=bleu]").all_inner_texts()]
    assert shown == sorted(shown, reverse=True)
    assert not problems, problems
    page.close()


def test_clicking_a_confusion_cell_shows_exactly_its_images(browser, server, built):
    import numpy as np

    from pipeline.io import load_arrays

    data = _data(built, "cls")
    predictions = load_arrays(built.run("cls") / "eval" / "predictions.npz")
    page, problems = _guarded_page(browser, f"{server}/generated/resnet.html")
    page.wait_for_selector(".confusion-cell")
    true, predicted = map(int, next(iter(data["cells"])).split(","))
    page.click(f"td[data-true='{true}'][data-pred='{predicted}']")
    shown = [int(i) for i in page.locator(".confusion-thumb").evaluate_all("els => els.map(e => e.dataset.index)")]
    in_cell = np.flatnonzero((predictions["labels"] == true) & (predictions["predictions"] == predicted))
    listed = data["cells"][f"{true},{predicted}"]
    assert shown == [c["index"] for c in listed] and set(shown) <= set(in_cell.tolist())
    assert len(shown) == min(len(in_cell), built_cell_limit(built))
    confidences = [c["confidence"] for c in listed]
    assert confidences == sorted(confidences, reverse=True)  # most confident first
    loaded = page.evaluate("""new Promise(done => { const img = new Image(); img.onload = () => done(img.width);
        img.onerror = () => done(0); img.src = getComputedStyle(document.querySelector('.confusion-thumb'))
        .backgroundImage.slice(5, -2); })""")
    assert loaded > 0
    assert not problems, problems
    page.close()


def test_explorers_work_from_file_urls(browser, built):
    for page_path, selector in (("generated/transformer.html", ".attention-line"),
                                ("generated/transformer.html", ".decode-table tbody tr"),
                                ("generated/resnet.html", ".confusion-cell")):
        page, problems = _guarded_page(browser, (built.site / page_path).as_uri())
        page.wait_for_selector(selector, state="attached", timeout=10_000)
        assert not problems, problems
        page.close()


def test_text_from_data_is_shown_as_text_and_runs_nothing(browser, server, built):
    """A class name from batches.meta and corpus lines carrying <img onerror> and <script> (conftest): the pages
    show them literally, as a reader would type them, and no script of theirs runs."""
    from tests.conftest import HOSTILE_CLASS, HOSTILE_SOURCE, HOSTILE_TARGET

    expected = {"generated/resnet.html": [HOSTILE_CLASS],
                "generated/transformer.html": [HOSTILE_SOURCE, HOSTILE_TARGET]}
    for page_path, texts in expected.items():
        page = browser.new_page()
        page.goto(f"{server}/{page_path}", wait_until="load")
        text = page.evaluate("document.body.innerText")
        for hostile in texts:
            assert hostile in text, (page_path, hostile)
        assert page.evaluate("window.xss") is None, page_path
        page.close()
