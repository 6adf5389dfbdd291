"""The web page in a real browser: Debian's headless Chromium drives `boltzformer serve`.

Run with `make test-browser` (installs chromium and chromium-driver with apt when missing);
`make test` leaves it out (marker `browser`). Nothing is downloaded at run time: selenium gets
/usr/bin/chromedriver through `Service`, so its driver manager never runs. The screenshot goes
to $BOLTZFORMER_SCREENSHOT (else the test's tmp folder); the test prints where.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import start_serve, wait_for
from selenium.webdriver.common.by import By

import boltzformer
from boltzformer.apps.web_screenshot import chromium, requested, screenshot, segment

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
    try:
        with chromium(tmp_path / "chromium-profile") as driver:
            yield driver
    except FileNotFoundError as err:
        pytest.fail(f"{err}")


def test_segment_an_uploaded_image_in_the_browser(page_url, browser, sample_dir, tmp_path,
                                                  capsys):
    image = sample_dir / "biomedparse-demo" / "demo" / "01_CT_lung.png"
    segment(browser, page_url, image, ["nodule in lung CT"])
    assert "nodule in lung CT" in browser.find_element(By.ID, "areas").text
    assert "nodule-in-lung-ct_mask" in browser.find_element(By.ID, "downloads").text

    outside = {u for u in requested(browser) if not u.startswith(page_url.rstrip("/"))}
    assert not outside, f"the page fetched from the network: {sorted(outside)}"

    shot = screenshot(browser, Path(os.environ.get("BOLTZFORMER_SCREENSHOT")
                                    or tmp_path / "web.png"))
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")

