"""A real headless browser for the report pages: Chromium through selenium and the system chromedriver (Debian's
`chromium` and `chromium-driver`, which .ci/run installs). Tests skip with the reason where it cannot start."""

from __future__ import annotations

import contextlib
import shutil

import pytest


def _binary(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 1600):
    """A headless Chromium driver that keeps the page's console log; skips the test when there is none."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _binary("chromium", "chromium-browser", "google-chrome"), _binary("chromedriver")
    if not browser or not driver_path:
        pytest.skip("no Chromium or chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as exc:  # a broken install: the reason, not a failure of the page
        pytest.skip(f"Chromium could not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def errors(driver) -> list[dict]:
    """The page's console messages at SEVERE level (JavaScript errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
