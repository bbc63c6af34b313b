"""The model explorer page (issue 24) in a real browser: Debian's Chromium, driven by Playwright for
Python, against a real server with two models (the digits images and a table of sensor records).

Each panel is checked against the live server: what the page draws is compared with what a direct
HTTP call of the same rpc answers. Nothing is downloaded: Playwright runs the system's
/usr/bin/chromium, and the module is skipped, saying why, where that or Playwright is missing.

``VAE_UI_SCREENSHOTS=docs/img pytest tests/test_ui.py`` also writes the screenshots of docs/ui.md.
"""

import json
import math
import os
import urllib.request
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from tests.server_process import start_server
from vae_serve.export.sources import load_source, make_splits

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    reason = f"{CHROMIUM} is missing (Debian's chromium package; scripts/test.sh installs it)"
    pytest.skip(reason, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is missing (the dev extra has it)")
Image = pytest.importorskip("PIL.Image", reason="Pillow writes the uploaded PNGs (the train extra has it)")

TOKEN = "explorer-81d2c4"
SCREENSHOTS = os.environ.get("VAE_UI_SCREENSHOTS")
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
WAIT_MS = 20_000
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def call(server, path: str, body: dict | None = None) -> dict:
    """A direct HTTP call of the API the page calls, with the token."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.http_url + path, data=data, headers={"Authorization": f"Bearer {TOKEN}"})
    with OPENER.open(request, timeout=30) as reply:
        return json.loads(reply.read())


def png(path: Path, row: np.ndarray, scale: float) -> np.ndarray:
    """Write an 8x8 digits row (raw 0..16) as a grey PNG; returns the raw row the page will read back."""
    pixels = np.round(row.reshape(8, 8) * 255 / scale).astype(np.uint8)
    Image.fromarray(pixels).save(path)  # uint8 [8, 8]: mode L, grey
    return pixels.reshape(-1) / 255 * scale  # the page: each byte's intensity times the raw range


@pytest.fixture(scope="module")
def served(tmp_path_factory, digits_bundle, gaussian_bundle):
    """digits (8x8 images) and sensors (12 features) in one repository, with a token and the page on."""
    folder = tmp_path_factory.mktemp("explorer")
    for name, bundle in (("digits", digits_bundle), ("sensors", gaussian_bundle)):
        (folder / name).mkdir()
        (folder / name / "1").symlink_to(bundle, target_is_directory=True)
    process = start_server(
        "--model-repository", str(folder), "--http-port", "0", "--ui", env={"VAE_AUTH_TOKENS": TOKEN}
    )
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, served):
    """One page at 1280x800, its token entered, the digits model shown."""
    opened = browser.new_page(viewport=DESKTOP)
    opened.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(served.http_url + "/ui/")
    opened.fill("#token", TOKEN)
    opened.click("#token-save")
    opened.wait_for_selector('body[data-drawn="digits/1"]')
    # From here (the first call, before the token, was refused) a console error is a failed call or a
    # broken policy (a Content-Security-Policy violation, say).
    opened.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield opened
    opened.close()
    assert not errors, errors  # no script error, ever


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict:
    """Real held-out digits rows as PNGs, and real sensor records as a CSV file."""
    folder = tmp_path_factory.mktemp("uploads")
    test = make_splits(load_source("digits")).test.x
    files = {"digits": [], "raws": []}
    for index in (0, 1):
        path = folder / f"digit{index}.png"
        files["raws"].append(png(path, test[index], 16.0))
        files["digits"].append(path)
    return files


def choose(page, name: str) -> None:
    if page.get_attribute("body", "data-drawn") != f"{name}/1":
        page.select_option("#model", name)
        page.wait_for_selector(f'body[data-drawn="{name}/1"]')  # every panel drawn from it


def pixel(page, selector: str, x: int, y: int) -> int:
    """The red value of a canvas pixel."""
    return page.locator(selector).evaluate(f"(canvas) => canvas.getContext('2d').getImageData({x}, {y}, 1, 1).data[0]")


BAR_RGB = (188, 211, 234)  # #bcd3ea, the bars of the page's histograms


def bar_top(page, selector: str, columns: range) -> int | None:
    """The highest canvas row of a bar pixel in ``columns`` (a threshold line may cross one), or None."""
    script = """([canvas, columns, rgb]) => {
      const context = canvas.getContext('2d');
      const tops = columns.map((x) => {
        const data = context.getImageData(x, 0, 1, canvas.height).data;
        for (let y = 0; y < canvas.height; y++) {
          if (data[4 * y] === rgb[0] && data[4 * y + 1] === rgb[1] && data[4 * y + 2] === rgb[2]) return y;
        }
        return null;
      }).filter((y) => y !== null);
      return tops.length ? Math.min(...tops) : null;
    }"""
    canvas = page.locator(selector).element_handle()
    return page.evaluate(script, [canvas, list(columns), list(BAR_RGB)])


def js_round(value: float) -> int:
    """JavaScript's Math.round (halves up), which the page's drawing uses."""
    return math.floor(value + 0.5)


def shown_count(page, selector: str, columns: range, tallest: float) -> float:
    """The count a bar of ``selector`` (a histogram of the page) shows, read from its height in pixels."""
    _, top, _, bottom = json.loads(page.get_attribute(selector, "data-plot"))
    found = bar_top(page, selector, columns)
    return 0.0 if found is None else (bottom - found) / (bottom - top) * tallest


def fact(page, name: str) -> str:
    return page.locator(f'#card-facts dd[data-fact="{name}"]').inner_text()


def test_a_missing_or_wrong_token_says_so(browser, served):
    fresh = browser.new_page(viewport=PHONE)
    try:
        fresh.goto(served.http_url + "/ui/")
        banner = fresh.locator("#banner")
        banner.wait_for()
        assert "needs a token" in banner.inner_text()
        fresh.fill("#token", "not-" + TOKEN)
        fresh.click("#token-save")
        fresh.wait_for_selector("#banner:has-text('refused the token')")
        assert fresh.locator("h1").is_visible()  # the page stays, with the message
        fresh.fill("#token", TOKEN)
        fresh.click("#token-save")
        fresh.wait_for_selector('body[data-model="digits/1"]')
        assert banner.is_hidden()
    finally:
        fresh.close()


def test_the_card_shows_the_served_model(page, served):
    choose(page, "digits")
    info = call(served, "/v1/models/digits/info")
    assert fact(page, "latent dimensions") == str(info["latentDim"])
    assert fact(page, "likelihood") == info["likelihood"]
    assert info["preprocessing"]["description"] in fact(page, "preprocessing")
    assert f"{info['validation']['iwaeNllNats']:.2f} nats" in fact(page, "validation")
    charts = page.locator("#card-calibration canvas")
    assert charts.count() == len(info["calibration"])
    for index, entry in enumerate(info["calibration"]):
        assert charts.nth(index).get_attribute("data-score") == entry["score"]
        assert charts.nth(index).get_attribute("data-thresholds") == "4"  # 10%, 5%, 1%, 0.1%
    threshold = next(q["value"] for q in info["calibration"][0]["quantiles"] if q["level"] == 0.99)
    assert f"1%: {threshold:.5g}" in page.locator("#card-calibration figcaption").first.inner_text()
    # The bars are the served histogram: one per bin, each as tall as its count (to a pixel).
    for index, entry in enumerate(info["calibration"]):
        selector = f"#card-calibration canvas >> nth={index}"
        edges, counts = entry["histogram"]["edges"], entry["histogram"]["counts"]
        assert charts.nth(index).get_attribute("data-bars") == str(len(counts)) == "30"
        left, top, right, bottom = json.loads(charts.nth(index).get_attribute("data-plot"))
        tallest, pixel_rows = max(counts), bottom - top
        x = [js_round(left + (edge - edges[0]) / (edges[-1] - edges[0]) * (right - left)) for edge in edges]
        for bar in (int(np.argmax(counts)), int(np.argmin(np.abs(np.array(counts) - tallest / 2)))):
            middle = (x[bar] + x[bar + 1]) // 2
            shown = shown_count(page, selector, range(middle - 1, middle + 2), tallest)
            assert abs(shown - counts[bar]) <= tallest / pixel_rows, (entry["score"], bar)


def test_sampling_draws_the_asked_tiles_as_the_api_answers(page, served):
    choose(page, "digits")
    page.fill("#sample-n", "9")
    page.fill("#sample-seed", "5")
    page.fill("#sample-temperature", "0.7")
    page.click("#sample-go")
    page.wait_for_selector("#sample-status:has-text('9 samples')")
    assert page.locator("#sample-grid canvas").count() == 9
    reply = call(served, "/v1/models/digits:sample?tensors=array", {"n": 9, "seed": "5", "temperature": 0.7})
    mean = np.array(reply["xMean"])  # Bernoulli probabilities: the pixel intensities of pixel / 16
    for tile, feature in ((0, 0), (4, 27), (8, 63)):
        x, y = feature % 8, feature // 8
        assert abs(pixel(page, f"#sample-grid canvas >> nth={tile}", x, y) - 255 * mean[tile, feature]) <= 1


def test_interpolation_between_two_uploaded_images(page, rows):
    choose(page, "digits")
    page.set_input_files("#interp-start-file", str(rows["digits"][0]))
    page.set_input_files("#interp-end-file", str(rows["digits"][1]))
    page.fill("#interp-steps", "6")
    page.select_option("#interp-path", "INTERPOLATION_PATH_SPHERICAL")
    page.click("#interp-go")
    page.wait_for_selector("#interp-status:has-text('spherical')")
    assert page.locator("#interp-strip canvas").count() == 6


def test_the_manifold_map_decodes_its_grid(page, served):
    choose(page, "digits")
    assert page.locator("#manifold-plane").input_value() == "principal"  # the digits bundle records its plane
    page.fill("#manifold-grid", "5")
    page.click("#manifold-go")
    page.wait_for_selector('#manifold-map canvas[data-grid="5"]')
    axes = [np.array(d["unit"]) for d in call(served, "/v1/models/digits/info")["latentMap"]["directions"]]
    low, high = NormalDist().inv_cdf(0.5 / 5), NormalDist().inv_cdf(4.5 / 5)
    z = (low * axes[0] + high * axes[1]).tolist()  # the top-left tile of the principal plane
    probs = np.array(call(served, "/v1/models/digits:decode?tensors=array", {"z": [z]})["bernoulli"]["probs"][0])
    assert abs(pixel(page, "#manifold-map canvas", 3, 4) - 255 * probs[4 * 8 + 3]) <= 1
    page.select_option("#manifold-plane", "dimensions")
    page.fill("#manifold-dim-a", "2")
    page.fill("#manifold-dim-b", "5")
    page.fill("#manifold-grid", "4")
    page.click("#manifold-go")
    page.wait_for_selector('#manifold-map canvas[data-grid="4"]')
    assert page.locator("#manifold-map canvas").evaluate("(canvas) => [canvas.width, canvas.height]") == [35, 35]
    # The top-left tile: the first dimension at its lowest quantile, the second at its highest.
    quantiles = [NormalDist().inv_cdf((index + 0.5) / 4) for index in range(4)]
    z = [0.0] * 8
    z[2], z[5] = quantiles[0], quantiles[3]
    probs = np.array(call(served, "/v1/models/digits:decode?tensors=array", {"z": [z]})["bernoulli"]["probs"][0])
    for feature in (0, 20, 45):
        x, y = feature % 8, feature // 8
        assert abs(pixel(page, "#manifold-map canvas", x, y) - 255 * probs[feature]) <= 1


def test_scoring_an_uploaded_image_and_the_monitoring_it_feeds(page, served, rows):
    choose(page, "digits")
    page.set_input_files("#score-file", str(rows["digits"][0]))
    page.click("#score-go")
    page.wait_for_selector("#score-map canvas.heat")
    body = {"x": [rows["raws"][0].tolist()], "falsePositiveRate": 0.01}
    direct = call(served, "/v1/models/digits:scoreAnomaly", body)  # the default score uses no draws: exact
    assert f"{direct['scores'][0]:.6g}" in page.locator('#score-result dd[data-fact="score"]').inner_text()
    shown_p = float(page.locator('#score-result dd[data-fact="p-value"]').inner_text())  # 4 significant digits
    assert abs(shown_p - direct["pValue"][0]) <= 5e-4 * direct["pValue"][0]
    decision = "anomalous" if direct["isAnomaly"][0] else "normal"
    assert page.locator('#score-result dd[data-fact="decision"]').inner_text() == decision
    more = make_splits(load_source("digits")).test.x[:40]  # a histogram with more than the one upload in it
    call(served, "/v1/models/digits:scoreAnomaly", {"x": more.tolist()})
    page.click("#monitor-go")
    page.wait_for_selector("#monitor-body .monitor")
    watched = call(served, "/v1/models/digits/monitoring")["scores"][0]
    seen = watched["rowsSeen"]
    assert page.locator('#monitor-body dd[data-fact="rows"]').first.inner_text().startswith(f"{seen} since loaded")
    assert page.locator("#monitor-body table tbody tr").count() >= 1  # the flag rate at 0.01
    # The p-value histogram: a bar per bucket, each as tall as the rpc's count (the metric's buckets).
    histogram = watched["pValueHistogram"]
    counts = [int(count) for count in histogram["counts"]]  # uint64: strings in the JSON mapping
    assert sum(counts) == int(seen) and counts[-1] == 0  # none above the last bound, 1
    bounds = histogram["upperBounds"]
    chart = "#monitor-body canvas.p-values >> nth=0"
    assert page.get_attribute(chart, "data-bars") == str(len(bounds))
    left, top, right, bottom = json.loads(page.get_attribute(chart, "data-plot"))
    expected = [int(seen) * (bound - low) for bound, low in zip(bounds, [0.0, *bounds[:-1]], strict=True)]
    tallest = max(*counts, *expected)
    slot = (right - left) / len(bounds)
    for bucket, count in enumerate(counts[:-1]):
        middle = js_round(left + bucket * slot) + int(slot / 2)
        assert abs(shown_count(page, chart, range(middle, middle + 1), tallest) - count) <= tallest / (bottom - top)


def test_a_table_model_is_drawn_as_tables(page, served, sensor_npy, tmp_path):
    records = np.load(sensor_npy[0])[:4]
    csv = tmp_path / "records.csv"
    header = ",".join(f"sensor{index}" for index in range(records.shape[1]))
    csv.write_text(header + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in records) + "\n")
    choose(page, "sensors")
    assert fact(page, "input shape").startswith("[12]")
    samples = int(page.input_value("#sample-n"))
    assert page.locator("#sample-grid table tbody tr").count() == samples
    assert page.locator("#sample-grid th").all_inner_texts()[-1] == "f11"  # a column per feature
    page.set_input_files("#interp-start-file", str(csv))
    page.fill("#interp-end-row", "3")
    page.fill("#interp-steps", "5")
    page.click("#interp-go")
    page.wait_for_selector("#interp-strip table")
    assert page.locator("#interp-strip table tbody tr").count() == 5
    page.set_input_files("#score-file", str(csv))
    page.fill("#score-row", "2")
    page.click("#score-go")
    page.wait_for_selector("#score-map table")
    body = {"x": [records[1].tolist()], "returnFeatureErrors": True}
    errors = call(served, "/v1/models/sensors:scoreAnomaly?tensors=array", body)
    shown = page.locator("#score-map table tbody tr").nth(1).locator("td").all_inner_texts()  # 3 significant digits
    expected = errors["featureErrors"][0]
    assert len(shown) == len(expected) == 12
    for text, value in zip(shown, expected, strict=True):
        assert abs(float(text) - value) <= 5e-3 * abs(value) + 1e-12
    assert page.locator("#score-map canvas.heat").count() == 1
    page.fill("#score-row", "9")
    page.click("#score-go")
    page.wait_for_selector("#score-status:has-text('choose a row from 1 to 4')")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_page_fits_the_screen(page, rows, viewport):
    choose(page, "digits")
    page.set_viewport_size(viewport)
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    # Every element ends inside the screen, but the contents of a panel's own scrolling box.
    wider = page.evaluate(
        "(width) => [...document.querySelectorAll('body *')].filter((element) => !element.closest('.scroll') "
        "&& element.getBoundingClientRect().right > width + 0.5).map((element) => element.id || element.tagName)",
        width,
    )
    assert wider == []
    if SCREENSHOTS:
        screenshot(page, rows, Path(SCREENSHOTS) / f"explorer-{'desktop' if viewport is DESKTOP else 'phone'}.png")
    page.set_viewport_size(DESKTOP)


def screenshot(page, rows: dict, path: Path) -> None:
    """The page as docs/ui.md shows it: the digits model, a walk and a scored upload drawn, from the top."""
    page.set_input_files("#interp-start-file", str(rows["digits"][0]))
    page.set_input_files("#interp-end-file", str(rows["digits"][1]))
    page.click("#interp-go")
    page.set_input_files("#score-file", str(rows["digits"][1]))
    page.click("#score-go")
    page.wait_for_selector("#score-map canvas.heat")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
