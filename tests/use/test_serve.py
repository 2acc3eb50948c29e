"""`python -m jaxmnist.serve`: the /predict endpoint over HTTP, and the page in headless Chromium.

The server runs in a thread on a free localhost port with the trained checkpoint. The
browser test draws a real MNIST test digit on the canvas with pointer actions and reads
the page's answer; it also saves a screenshot (to $JAXMNIST_ARTIFACTS_DIR, else the
test's tmp dir, plus /tmp/jaxmnist-page.png; with JAXMNIST_UPDATE_DOCS_IMAGES=1 also
docs/images/serve.png).
"""

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jaxmnist.use import preprocess, serve
from servers import running

pytestmark = pytest.mark.xdist_group("trained_model")  # one trained model per process

httpx = pytest.importorskip("httpx")
pytest.importorskip("hypercorn")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAD = 280  # the page's canvas, px
CELL = PAD // 28


@pytest.fixture(scope="module")
def served(trained_workdir):
    """(base URL, Model) of a live server on the trained checkpoint."""
    app, model = serve.app_for_workdir(trained_workdir)
    with running(app) as url:
        yield url, model


def post(url, **kwargs):
    return httpx.post(url + "/predict", timeout=30, **kwargs)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_json_pixels_are_used_as_they_are(served, mnist_test):
    url, model = served
    for i in range(5):
        pixels = mnist_test.images[i, :, :, 0]
        r = post(url, json={"pixels": pixels.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        want = model.log_probs(pixels[None, :, :, None])[0]
        assert body["prediction"] == int(np.argmax(want))
        np.testing.assert_allclose(body["probabilities"], np.exp(want), atol=1e-6)
        assert body["input"] == pixels.tolist()


def test_image_upload_is_preprocessed_like_predict(served, mnist_test):
    url, model = served
    scan = Image.fromarray(255 - mnist_test.images[0, :, :, 0]).resize((200, 200))
    data = png_bytes(scan)
    r = post(url, content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    seen = preprocess.from_bytes(data)
    assert r.json()["input"] == seen.tolist()
    assert r.json()["prediction"] == int(np.argmax(model.log_probs(seen[None, :, :, None])[0]))
    buf = io.BytesIO()
    scan.convert("RGB").save(buf, "JPEG", quality=85)
    r = post(url, content=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["prediction"] == int(mnist_test.labels[0])


def test_bad_requests_get_4xx_with_a_message_and_the_server_lives(served):
    url, _ = served
    good = [[0] * 28 for _ in range(28)]
    out_of_range = [row[:] for row in good]
    out_of_range[3][4] = 256

    def chunks():  # no Content-Length: the limit must hold on the stream too
        for _ in range(40):
            yield b"\x00" * 100_000

    cases = {
        "wrong content type": (415, dict(content=b"hello", headers={"Content-Type": "text/plain"})),
        "no content type": (415, dict(content=b"hello")),
        "malformed JSON": (400, dict(content=b'{"pixels": [[1, 2', headers={"Content-Type": "application/json"})),
        "not an object": (422, dict(json=[1, 2, 3])),
        "wrong shape": (422, dict(json={"pixels": [[0] * 28] * 27})),
        "ragged rows": (422, dict(json={"pixels": [[0] * 28] * 27 + [[0] * 5]})),
        "strings": (422, dict(json={"pixels": [["a"] * 28] * 28})),
        "out of range": (422, dict(json={"pixels": out_of_range})),
        "negative": (422, dict(json={"pixels": [[-1] * 28] * 28})),
        "oversize": (413, dict(content=b"\x89PNG" + b"\x00" * (3 * 1024 * 1024),
                              headers={"Content-Type": "image/png"})),
        "oversize chunked": (413, dict(content=chunks(), headers={"Content-Type": "image/png"})),
        "non-image bytes": (400, dict(content=b"GIF89a but not really", headers={"Content-Type": "image/png"})),
        "empty body": (400, dict(content=b"", headers={"Content-Type": "image/png"})),
        "blank image": (422, dict(content=png_bytes(Image.new("L", (100, 100), 255)),
                                  headers={"Content-Type": "image/png"})),
    }
    for name, (status, kwargs) in cases.items():
        r = post(url, **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert isinstance(r.json().get("error"), str) and r.json()["error"], name
    assert httpx.get(url + "/", timeout=10).status_code == 200
    assert post(url, json={"pixels": good}).status_code == 200  # all-black: a valid, dull input
    assert httpx.get(url + "/predict", timeout=10).status_code == 405


def test_binds_to_localhost_by_default():
    assert serve.parse_args(["--workdir", "w"]).host == "127.0.0.1"


# --- the page in a real browser -------------------------------------------------------------


def strokes(digit: np.ndarray, level: int = 100):
    """Horizontal strokes along each row's runs of ink, in canvas pixels: (x0, x1, y)."""
    out = []
    for r, row in enumerate(digit >= level):
        c = 0
        while c < 28:
            if row[c]:
                start = c
                while c < 28 and row[c]:
                    c += 1
                out.append((start * CELL + CELL // 2, (c - 1) * CELL + CELL // 2, r * CELL + CELL // 2))
            c += 1
    return out


def simulate_drawing(digit: np.ndarray) -> Image.Image:
    """What the page's canvas holds after `strokes(digit)` (same pen: 20 px, round)."""
    im = Image.new("L", (PAD, PAD), 255)
    d = ImageDraw.Draw(im)
    for x0, x1, y in strokes(digit):
        d.line([(x0, y), (x1, y)], fill=0, width=20)
        for x in (x0, x1):
            d.ellipse([x - 10, y - 10, x + 10, y + 10], fill=0)
    return im


def pick_digit(model, test) -> int:
    """The first test digit the net gets right, confidently, both as given and as drawn."""
    for i in range(200):
        digit = test.images[i, :, :, 0]
        label = int(test.labels[i])
        drawn = preprocess.to_mnist(simulate_drawing(digit))[None, :, :, None]
        p_orig = np.exp(model.log_probs(digit[None, :, :, None])[0])
        p_drawn = np.exp(model.log_probs(drawn)[0])
        if p_orig.argmax() == label and p_drawn.argmax() == label and p_drawn[label] > 0.9 \
                and len(strokes(digit)) <= 60:
            return i
    pytest.fail("no test digit among the first 200 is classified right when drawn")


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,720",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_draws_a_real_digit_and_shows_the_right_class(served, browser, mnist_test, tmp_path):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, model = served
    i = pick_digit(model, mnist_test)
    digit, label = mnist_test.images[i, :, :, 0], int(mnist_test.labels[i])
    browser.get(url + "/")
    pad = browser.find_element(By.ID, "pad")
    assert pad.size == {"width": PAD, "height": PAD}
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "model-info").text.startswith("gap8k"))

    actions = ActionBuilder(browser, duration=10)
    for x0, x1, y in strokes(digit):  # move_to offsets are from the element's centre
        actions.pointer_action.move_to(pad, x0 - PAD // 2, y - PAD // 2)
        actions.pointer_action.pointer_down()
        actions.pointer_action.move_to(pad, x1 - PAD // 2, y - PAD // 2)
        actions.pointer_action.pointer_up()
    actions.perform()

    def settled(d):
        body = d.find_element(By.TAG_NAME, "body")
        text = d.find_element(By.ID, "prediction").text
        return body.get_attribute("data-busy") == "0" and text.isdigit() and text

    shown = WebDriverWait(browser, 30).until(settled)
    message = browser.find_element(By.ID, "message").text
    assert message == ""
    assert browser.find_element(By.ID, "unsure").text == ""  # a clear digit: no doubt shown
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-unsure") == "0"
    assert int(shown) == label, f"test digit {i} ({label}) drawn, page says {shown}"
    top = browser.find_element(By.CSS_SELECTOR, "#bars li.top .digit").text
    assert int(top) == label
    # The page's 28x28 preview is the input the net saw: it holds a digit, centred.
    seen = browser.execute_script(
        "return Array.from(document.getElementById('input').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((_, k) => k % 4 === 0));")
    seen = np.asarray(seen, np.float64).reshape(28, 28)
    rows, cols = np.nonzero(seen)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
    cy = (seen.sum(1) @ np.arange(28)) / seen.sum()
    cx = (seen.sum(0) @ np.arange(28)) / seen.sum()
    assert abs(cy - 14) <= 0.6 and abs(cx - 14) <= 0.6

    folder = Path(os.environ.get("JAXMNIST_ARTIFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "serve-page.png"
    assert browser.save_screenshot(str(shot))
    shutil.copyfile(shot, "/tmp/jaxmnist-page.png")
    if os.environ.get("JAXMNIST_UPDATE_DOCS_IMAGES") == "1":
        docs = Path(__file__).resolve().parents[2] / "docs" / "images" / "serve.png"
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs)
    print(f"screenshot of the page (test digit {i}, a {label}): {shot}")

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == "\u2013"


def test_page_says_when_it_is_unsure_and_names_the_runner_up(browser):
    """A network that splits its belief 0.45 / 0.35 between 4 and 9: the page shows both,
    marked unsure, instead of a bare '4'."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    belief = np.full(10, 0.025, np.float32)
    belief[4], belief[9] = 0.45, 0.35

    def torn(images):
        return np.log(np.tile(belief, (len(images), 1)))

    with running(serve.create_app(torn)) as url:
        browser.get(url + "/")
        pad = browser.find_element(By.ID, "pad")
        actions = ActionBuilder(browser, duration=10)
        actions.pointer_action.move_to(pad, -40, -60)
        actions.pointer_action.pointer_down()
        actions.pointer_action.move_to(pad, 0, 80)
        actions.pointer_action.pointer_up()
        actions.perform()
        WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "0"
            and d.find_element(By.ID, "prediction").text == "4")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-unsure") == "1"
        assert browser.find_element(By.ID, "unsure").text == "Not sure: 4 (45%) or 9 (35%)?"
