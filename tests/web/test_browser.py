"""The console in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromium-driver, against `scbundle web` serving the session's database. One browser
and one server for the whole session; few tests, in order: refused without a token, then
logged in: from the overview's fault count to the failed component's stderr tail, a revert
from the run page, and a forged POST without the CSRF token refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from webkit import OPERATOR

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# the screenshots: into docs/ when asked (SCBUNDLE_SCREENSHOTS=docs), so a test run leaves the tree clean
DOCS = Path(__file__).resolve().parents[2] / "docs" if os.environ.get("SCBUNDLE_SCREENSHOTS") == "docs" else None

if not (CHROMIUM and DRIVER) and os.geteuid() != 0:
    pytest.skip("chromium and chromium-driver are not installed (scripts/install-test-services.sh, as root, installs them)",
                allow_module_level=True)  # fmt: skip
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(console):
    port = _free_port()
    log = open(console.config_path.parent / "web.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "web", "--port", str(port)], env=console.cli.env,
                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/login", timeout=2).read()
            break
        except OSError:
            assert p.poll() is None, f"scbundle web exited {p.returncode}: {(console.config_path.parent / 'web.log').read_text()}"
            assert time.monotonic() < deadline, "scbundle web did not answer in 60 s"
            time.sleep(0.2)
    yield base
    p.terminate()
    p.wait(timeout=20)
    log.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    assert CHROMIUM and DRIVER, "chromium / chromedriver missing: run scripts/install-test-services.sh as root"
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, css: str, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_a_page_without_the_token_is_refused(server, browser):
    browser.get(server + "/runs/1")
    _wait(browser, "#token")
    assert "log in" in browser.find_element(By.TAG_NAME, "h1").text
    assert "web0" not in browser.page_source and "Njobs" not in browser.page_source
    browser.find_element(By.ID, "token").send_keys("not-the-token-0123456789")
    browser.find_element(By.ID, "login").click()
    assert "not one of this console's" in _wait(browser, "#error").text


def test_from_the_fault_count_to_the_stderr_tail_then_revert_from_the_run_page(console, server, browser, tmp_path):
    shots = DOCS or tmp_path
    browser.get(server + "/login")
    _wait(browser, "#token").send_keys(OPERATOR)
    browser.find_element(By.ID, "login").click()
    link = _wait(browser, 'a.fault[href*="label=web2"]')
    browser.save_screenshot(str(shots / "web-overview.png"))
    assert link.text == "fault 5: 1"
    link.click()
    sid = console.bad_stage_id["web2"]
    _wait(browser, f'a.component[href$="/components/{sid}"]').click()
    tail = _wait(browser, "#stderr").text
    assert "bad input data" in tail and "truncated: 10 pixel bytes" in tail
    assert browser.find_element(By.ID, "exit").text == "5" and browser.find_element(By.ID, "phase").text == "command"
    rid = console.run_ids["web2"]
    browser.find_element(By.CSS_SELECTOR, f'h1 a[href="/runs/{rid}"]').click()
    assert _wait(browser, "#state").text == "error"
    browser.save_screenshot(str(shots / "web-run.png"))
    browser.find_element(By.CSS_SELECTOR, "button.revert-5").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "state").text == "new")
    assert "error -> new (1 requeued)" in browser.find_element(By.ID, "notice").text
    assert console.q("select state, fault from remote_run where remote_id = :r", r=rid) == [("new", 0)]
    assert console.q("select who from journal_event where remote_id = :r and command = 'web'", r=rid) == [("operator@web",)]


def test_a_forged_post_without_the_csrf_token_is_refused(console, server, browser):
    rid = console.run_ids["web0"]
    browser.get(server + f"/runs/{rid}")
    _wait(browser, "#state")
    # a form the page did not serve: the session's cookie goes with it, the CSRF token does not
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/actions/revert';"
        "for (const [k, v] of [['remote_id', arguments[0]], ['back', '/']]) {"
        "  const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();", str(rid))
    assert "CSRF token is missing or wrong" in _wait(browser, "#error").text
    assert console.q("select state from remote_run where remote_id = :r", r=rid) == [("error",)]
