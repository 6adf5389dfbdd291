"""The web app in headless Chromium: upload an image, segment prompts, take a screenshot.

    python -m boltzformer.apps.web_screenshot --checkpoint RUN/best --image IMAGE \
        --prompt "nuclei" --out docs/web.png
    make web-screenshot CHECKPOINT=RUN/best IMAGE=IMAGE PROMPT=nuclei

Starts `boltzformer serve --checkpoint` on a free port (as the load test does), drives the page
with Debian's `chromium` and `chromium-driver` through selenium (`[test]` extra; nothing is
downloaded at run time: the driver is /usr/bin/chromedriver, so selenium's driver manager
never runs), and saves the page once the masks are drawn. The browser test
(`tests/test_web_browser.py`) goes through the same steps.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from boltzformer.apps.web_load import spawn, wait_until_up

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# as root in a container: no sandbox; no background traffic to Google's hosts
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,2300")


@contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with its network log on; `profile` is its user-data folder.
    FileNotFoundError (one line) if Chromium or its driver is not installed."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: install Debian's chromium and "
                                    "chromium-driver (`make test-browser` does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def segment(driver: webdriver.Chrome, url: str, image: Path, prompts: Sequence[str],
            timeout: float = 120.0) -> None:
    """Open the page, upload `image`, type `prompts` (one a line), press Segment and wait
    until the overlay, probability and sampling figures have loaded. AssertionError if one
    does not."""
    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR,
                                                        "#upload input[type=file]")))
    upload.send_keys(str(Path(image).resolve()))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "encoded once"))
    driver.find_element(By.CSS_SELECTOR, "#prompts textarea").send_keys("\n".join(prompts))
    driver.find_element(By.ID, "segment").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"),
                                                f"{len(prompts)} prompt(s)"))
    for elem_id in ("overlay", "probability", "sampling"):
        picture = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR,
                                                               f"#{elem_id} img")))
        loaded = driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 100", picture)
        assert loaded, f"the {elem_id} image did not load"


def requested(driver: webdriver.Chrome) -> set[str]:
    """Every http(s)/ws URL the page asked for so far (from the network log)."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return {u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))}


def screenshot(driver: webdriver.Chrome, out: Path) -> Path:
    """The page from its top, saved as PNG to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    if not driver.save_screenshot(str(out)):
        raise RuntimeError(f"could not save the screenshot to {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Screenshot of `boltzformer serve` segmenting an "
                                "image in headless Chromium.")
    p.add_argument("--checkpoint", type=Path, required=True, help="model to serve")
    p.add_argument("--image", type=Path, required=True, help="image (or DICOM/NIfTI) to upload")
    p.add_argument("--prompt", action="append", required=True,
                   help="a prompt (repeat for several)")
    p.add_argument("--out", type=Path, default=Path("docs/web.png"), help="PNG to write")
    args = p.parse_args(argv)
    proc, url = spawn(args.checkpoint)
    try:
        wait_until_up(url, proc)
        with tempfile.TemporaryDirectory() as profile, chromium(Path(profile)) as driver:
            segment(driver, url, args.image, args.prompt)
            print(f"screenshot: {screenshot(driver, args.out)}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
