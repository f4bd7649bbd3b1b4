"""The standalone page in a real browser: `lora-native ui --demo`, headless Chromium driven
by selenium: clean the demo set, train the tiny model, see the LoRA and its prompt tag."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = os.path.join(ROOT, "build", "ui-screenshot.png")

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'lora-native[ui]')")
pytest.importorskip("torch", reason="training needs torch")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("needs %s and %s (apt-get install chromium chromium-driver; tools/system_deps.sh --test)"
                % (CHROMIUM, CHROMEDRIVER), allow_module_level=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GRADIO_ANALYTICS_ENABLED="False")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "lora_native", "ui", "--demo", "--port", str(port),
                             "--demo-dir", str(tmp_path / "demo")], cwd=str(tmp_path), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d/" % port
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                pytest.fail("the ui did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.5)
    yield url, tmp_path / "demo"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # explicit paths: no Selenium Manager download
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,3000",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, what, timeout, step=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return None


def _text(driver, elem_id):
    found = driver.find_elements("css selector", "#" + elem_id)
    return found[0].text if found else ""


def _field(driver, elem_id):
    return driver.find_element("css selector", "#%s textarea, #%s input" % (elem_id, elem_id))


@pytest.mark.slow
def test_clean_train_and_tag_in_the_browser(server, browser):
    url, demo = server
    browser.get(url)
    assert _wait(browser, lambda: browser.find_elements("css selector", "#ln-clean"), 60), "the page did not load"
    assert _field(browser, "ln-dataset").get_attribute("value") == str(demo / "raw")

    browser.find_element("css selector", "#ln-clean").click()
    report = _wait(browser, lambda: "kept" in _text(browser, "ln-report") and _text(browser, "ln-report"), 120)
    assert report, "no report; page error: %r" % _text(browser, "ln-error")
    assert "rejected" in report
    assert _field(browser, "ln-train-data").get_attribute("value") == str(demo / "raw") + "_clean"
    # the galleries show the rejected files and the duplicate groups
    assert browser.find_elements("css selector", "#ln-rejected img")
    assert browser.find_elements("css selector", "#ln-duplicates img")
    assert "landscape_" in _text(browser, "ln-captions")

    browser.find_element("css selector", "#ln-train").click()
    end = _wait(browser, lambda: any(w in _text(browser, "ln-progress") for w in ("Done", "Failed", "Cancelled"))
                and _text(browser, "ln-progress"), 240)
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    browser.save_screenshot(SCREENSHOT)
    assert end and end.startswith("Done"), "training did not finish: %r / %r" % (end, _text(browser, "ln-status"))
    lora = demo / "loras" / "demo.safetensors"
    assert lora.is_file()
    tag = _wait(browser, lambda: _field(browser, "ln-tag").get_attribute("value"), 10)
    assert tag == "<lora:demo:0.8>"
    assert _field(browser, "ln-lora-path").get_attribute("value") == str(lora)
    assert "checkpoint-" in _text(browser, "ln-checkpoints")
