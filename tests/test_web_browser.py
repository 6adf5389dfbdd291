"""The web page in a real browser: Debian's headless Chromium drives `boltzformer serve`.

Run with `make test-browser` (installs chromium and chromium-driver with apt when missing);
`make test` leaves it out (marker `browser`). Nothing is downloaded at run time: selenium gets
/usr/bin/chromedriver through `Service`, so its driver manager never runs. The screenshot goes
to $BOLTZFORMER_SCREENSHOT (else the test's tmp folder); the test prints where.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import start_serve, wait_for
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

import boltzformer

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# as root in a container: no sandbox; no background traffic to Google's hosts
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,2300")

pytestmark = pytest.mark.browser


@pytest.fixture
def page_url(tmp_path, small_model) -> str:
    """`boltzformer serve` on a free port with a tiny untrained checkpoint."""
    torch.manual_seed(0)
    ckpt = boltzformer.build_model("tiny", **small_model).save_pretrained(tmp_path / "ckpt")
    proc, url = start_serve(ckpt)
    try:
        wait_for(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


@pytest.fixture
def browser(tmp_path):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run `make test-browser`, which installs Debian's "
                        "chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _requested(driver) -> set[str]:
    """Every http(s) URL the page asked for so far."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return {u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))}


def test_segment_an_uploaded_image_in_the_browser(page_url, browser, sample_dir, tmp_path,
                                                  capsys):
    image = sample_dir / "biomedparse-demo" / "demo" / "01_CT_lung.png"
    wait = WebDriverWait(browser, 120)
    browser.get(page_url)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR,
                                                        "#upload input[type=file]")))
    upload.send_keys(str(image))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "encoded once"))
    browser.find_element(By.CSS_SELECTOR, "#prompts textarea").send_keys("nodule in lung CT")
    browser.find_element(By.ID, "segment").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "1 prompt(s)"))
    for elem_id in ("overlay", "probability", "sampling"):
        picture = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR,
                                                               f"#{elem_id} img")))
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 100", picture)
        assert loaded, f"the {elem_id} image did not load"
    assert "nodule in lung CT" in browser.find_element(By.ID, "areas").text
    assert "nodule-in-lung-ct_mask" in browser.find_element(By.ID, "downloads").text

    outside = {u for u in _requested(browser) if not u.startswith(page_url.rstrip("/"))}
    assert not outside, f"the page fetched from the network: {sorted(outside)}"

    shot = Path(os.environ.get("BOLTZFORMER_SCREENSHOT") or tmp_path / "web.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
