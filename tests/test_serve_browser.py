"""The web app in a real browser: headless Chromium (the OS's package) types a prompt, clicks
Generate and waits until the result is a source the browser can play. The screenshot is kept in
``test-artifacts/`` (or ``$MUSICLM_ARTIFACTS``)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from musiclm.bundle import make_bundle  # noqa: E402
from musiclm.pipeline import MusicLM  # noqa: E402
from musiclm.serve.app import build_app  # noqa: E402
from musiclm.serve.limits import Limits  # noqa: E402
from tests._tiny_bundle import PROMPTS, save_parts  # noqa: E402
from tests.test_serve import _parts  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("MUSICLM_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))
SECONDS = 4.0  # the app's default length: the server's limit when that is under 10 s

if not (CHROMIUM and DRIVER):
    if os.environ.get("MUSICLM_REQUIRE_BROWSER"):
        pytest.fail("chromium and chromedriver are required (make sysdeps installs them)", pytrace=False)
    pytest.skip("chromium / chromedriver not installed (make sysdeps)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def url(tmp_path):
    import uvicorn

    model = MusicLM.from_pretrained(
        make_bundle(tmp_path / "bundle", save_parts(tmp_path, _parts()), name="tiny-web")
    )
    app, queue = build_app(model, Limits(max_seconds=4.0, max_candidates=2), tmp_path / "results")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=30)
    queue.close()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_generate_in_the_browser(url, browser):
    browser.get(url)
    prompt = _until(lambda: browser.find_elements(By.CSS_SELECTOR, "#prompt textarea"), 60, "the prompt box")[
        0
    ]
    # the page renders its components one by one: the button may come after the prompt box
    generate = _until(lambda: browser.find_elements(By.CSS_SELECTOR, "button#generate"), 60, "the button")[0]
    # bad input first: an empty prompt is refused with the one-line message, nothing is queued
    generate.click()
    _until(lambda: "prompt 0 is empty" in browser.find_element(By.TAG_NAME, "body").text, 30, "the error")
    prompt.send_keys(PROMPTS[0])
    generate.click()
    # the result player gets a download link once the job is done: the file the player plays
    link = _until(
        lambda: browser.execute_script(
            "const a = document.querySelector('#result a[download]'); return a && a.href"
        ),
        120,
        "the result audio",
    )
    assert link.endswith("audio.wav")
    # the browser itself loads it as media: a playable source of the requested length
    duration = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const audio = new Audio(arguments[0]);
        audio.onloadedmetadata = () => done(audio.duration);
        audio.onerror = () => done('error ' + (audio.error && audio.error.code));""",
        link,
    )
    assert duration == pytest.approx(SECONDS, abs=0.01), duration
    status = browser.find_element(By.CSS_SELECTOR, "#status").text
    assert status.startswith("Done:"), status
    assert browser.find_elements(By.CSS_SELECTOR, "#spectrogram img")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "serve-app.png"))
