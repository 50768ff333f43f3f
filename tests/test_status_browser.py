"""The status page and the demo in a real browser: headless Chromium, driven by Selenium.

A slow upload parked half way must show on /status as its own row with
its progress (bytes read of declared); the demo's upload form must stream a
file (with JavaScript: a progress bar and the status page beside it showing
the upload while it streams; without: a plain multipart POST), and its
limit form must be refused from the headers with 0 body bytes read.
Screenshots at 400 px go to tests/artifacts/ (gitignored). Chromium comes
from Debian (`chromium`, `chromium-driver`), installed here when missing
and running as root; otherwise these tests are skipped. Every wait is bounded.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from observe import metrics_url, status, wait_until

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT = 20.0


def _install_chromium():
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
    ):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode:
            return False
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


@pytest.fixture(scope="module")
def browser_ready():
    if not _install_chromium():
        pytest.skip("needs Debian's chromium and chromium-driver (root installs them)")
    pytest.importorskip("selenium")
    ARTIFACTS.mkdir(exist_ok=True)


@pytest.fixture
def browser(browser_ready):
    """A factory of headless Chromium sessions, 400 px wide; quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started = []

    def start(javascript=True):
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=400,1000"):
            opts.add_argument(arg)
        if not javascript:
            opts.add_argument("--blink-settings=scriptEnabled=false")
        driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
        driver.set_page_load_timeout(WAIT)
        # Headless windows have a minimum width; the viewport is set exactly instead.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )
        started.append(driver)
        return driver

    yield start
    for d in started:
        d.quit()


def _wait(driver, fn):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: fn(d))


def _fits(driver):
    """The page needs no horizontal scrolling in its 400 px viewport."""
    inner, scroll = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]"
    )
    return inner == 400 and scroll <= inner


def _upload_row(driver, by):
    """The /upload row's state and progress, or None (absent, or redrawn meanwhile)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        rows = driver.find_elements(by.CSS_SELECTOR, '.req[data-path="/upload"]')
        if not rows:
            return None
        progress = rows[0].find_element(by.CSS_SELECTOR, ".progress")
        return {
            "state": rows[0].get_attribute("data-state"),
            "read": progress.get_attribute("data-read"),
            "declared": progress.get_attribute("data-declared"),
            "text": progress.text,
        }
    except StaleElementReferenceException:
        return None


def test_status_page_shows_a_parked_upload_with_its_progress(start_server, mode, browser):
    from selenium.webdriver.common.by import By

    srv = start_server("siesta.demo:app", "--metrics-bind", "127.0.0.1:0", mode=mode)
    url = metrics_url(srv)
    conn = srv.connect()
    try:
        conn.send(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 30000
        )
        assert wait_until(lambda: any(r["read"] == 30000 for r in status(url)["requests"]))
        driver = browser()
        driver.get(url + "/status")
        # The page redraws itself every second: read a row in one go, again
        # if it was redrawn under us.
        seen = _wait(driver, lambda d: _upload_row(d, By))
        assert seen["state"] == "reading_body", seen
        assert seen["read"] == "30000" and seen["declared"] == "100000", seen
        assert "29.3 KiB of 97.7 KiB (30%)" in seen["text"], seen
        assert _fits(driver), "the page is wider than a 400px window"
        driver.save_screenshot(str(ARTIFACTS / f"status-{mode}.png"))
    finally:
        conn.close()


def test_demo_upload_progress_and_early_refusal(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    srv = start_server("siesta.demo:app", "--metrics-bind", "127.0.0.1:0")
    metrics_url(srv)
    big = tmp_path / "upload.bin"
    data = os.urandom(3 * 1024 * 1024)
    big.write_bytes(data)
    driver = browser()
    driver.get(srv.url("/"))
    assert "Siesta is a WSGI server" in driver.find_element(By.CSS_SELECTOR, ".tag").text
    frame = driver.find_element(By.ID, "status")
    assert frame.get_attribute("src").endswith("/status")

    # Upload, read slowly by the app: the status page beside it shows the row.
    driver.find_element(By.ID, "upfile").send_keys(str(big))
    driver.find_element(By.ID, "upslow").click()
    driver.find_element(By.ID, "upgo").click()
    driver.switch_to.frame(frame)
    row = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '.req[data-path="/upload"]'))
    assert row
    driver.switch_to.default_content()
    assert driver.find_element(By.ID, "upbar").get_attribute("hidden") is None
    result = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#upout .sha"))[0]
    assert result.text == hashlib.sha256(data).hexdigest()
    assert driver.find_element(By.CSS_SELECTOR, "#upout .size").text == f"{len(data):,}"
    assert _fits(driver), "the demo is wider than a 400px window"
    driver.save_screenshot(str(ARTIFACTS / "demo-upload.png"))

    # Over the limit the user picked: refused from the headers, 0 bytes read.
    small = tmp_path / "small.bin"
    small.write_bytes(b"z" * 50_000)
    limit = driver.find_element(By.ID, "limit-bytes")
    limit.clear()
    limit.send_keys("1000")
    driver.find_element(By.ID, "limfile").send_keys(str(small))
    driver.find_element(By.ID, "limgo").click()
    refused = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#limout .refused"))[0]
    assert refused.find_element(By.CSS_SELECTOR, ".taken").text == "0"
    assert "over your limit of 1,000" in refused.text
    driver.save_screenshot(str(ARTIFACTS / "demo-refused.png"))


def test_demo_forms_work_without_javascript(start_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    srv = start_server("siesta.demo:app")
    data = os.urandom(200_000)
    f = tmp_path / "plain.bin"
    f.write_bytes(data)
    driver = browser(javascript=False)
    driver.get(srv.url("/"))
    driver.find_element(By.ID, "upfile").send_keys(str(f))
    driver.find_element(By.ID, "upgo").click()
    sha = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#result .sha"))[0]
    assert sha.text == hashlib.sha256(data).hexdigest()
    # The limit the user picks (QA probe, session 25: without JavaScript it
    # went in the body, and the default limit was applied).
    driver.get(srv.url("/"))
    limit = driver.find_element(By.ID, "limit-bytes")
    limit.clear()
    limit.send_keys("1000")
    driver.find_element(By.CSS_SELECTOR, "#limset button").click()
    _wait(driver, lambda d: "limit=1000" in d.current_url)
    driver.find_element(By.ID, "limfile").send_keys(str(f))
    driver.find_element(By.ID, "limgo").click()
    refused = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".refused"))[0]
    assert "over your limit of 1,000" in refused.text, refused.text
    driver.get(srv.url("/echo"))
    assert "comes straight back" in driver.find_element(By.TAG_NAME, "body").text
