# SPDX-License-Identifier: Apache-2.0
"""The mail catcher UI in a real browser: Debian's chromium + chromium-driver, driven
headless by python3-selenium. Screenshots go to build/catcher-screenshots/ (the README's
come from there); on failure the page at that moment is saved as failure-<test>.png."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO, free_port
from smtpraw import spawn_kumod, stop_kumod

SINK = os.path.join(REPO, "sink", "sink.lua")
SHOTS = os.path.join(REPO, "build", "catcher-screenshots")

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import (NoAlertPresentException, NoSuchElementException,
                                            StaleElementReferenceException)
    WHY_NOT = None
except ImportError as e:  # only when python3-selenium is genuinely missing
    WHY_NOT = "python3-selenium is not installed (%s); scripts/deps.sh test installs it" % e

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if WHY_NOT is None and not (CHROMIUM and CHROMEDRIVER):
    WHY_NOT = "chromium or chromium-driver is not installed; scripts/deps.sh test installs them"

# nosan: the catcher's C paths run under ASan in test_catcher*.py; this one
# drives the browser UI (JavaScript) and needs no second run
pytestmark = [pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
              pytest.mark.nosan]

XSS = '<img src=x onerror="window.__xss=1">"><script>window.__xss=2</script>'


@pytest.fixture
def browser(request):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
                         if hasattr(webdriver, "ChromeService")
                         else webdriver.chrome.service.Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(20)
    os.makedirs(SHOTS, exist_ok=True)
    failed_before = request.session.testsfailed
    yield d
    # the call phase is reported before fixtures are torn down
    if request.session.testsfailed > failed_before:
        path = os.path.join(SHOTS, "failure-%s.png" % request.node.name)
        d.save_screenshot(path)
        print("screenshot of the failure: %s" % path)
    d.quit()


@pytest.fixture
def sink(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    k = spawn_kumod(tmp_path / "sink", policy_path=SINK, env={
        "KUMO_SINK_PORT": str(smtp_port), "KUMO_SINK_HTTP": "127.0.0.1:%d" % http_port,
        "KUMO_SINK_STORE": str(tmp_path / "store"), "KUMO_SINK_BUSY_POLL": "0"})
    yield smtp_port, "http://127.0.0.1:%d" % http_port
    stop_kumod(k)


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--silent", "1", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def rows(d):
    return d.find_elements(By.CSS_SELECTOR, "#rows tr.msg")


def wait(d, cond, what, timeout=10):
    """Polls cond (the list re-renders on every event, so elements may go stale)."""
    return WebDriverWait(d, timeout, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(
        lambda _: cond(), message=what)


def subjects(d):
    return [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows(d)]


def no_alert(d):
    try:
        d.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def test_ui_live_view_html_search_delete(browser, sink):
    d = browser
    smtp_port, base = sink
    d.get(base + "/")
    wait(d, lambda: d.find_element(By.ID, "live").get_attribute("class") == "on",
         "the event stream did not connect")
    assert rows(d) == []
    html = ("<p id='hello'>Hello <b>HTML</b> world</p>"
            "<script>document.body.setAttribute('data-ran','yes');parent.__xss=3</script>"
            "<img src='http://127.0.0.1:9/remote.png'>")
    # arrives without a reload (Server-Sent Events)
    swaks(smtp_port, "--to", "victim@example.com", "--from", "attacker@example.com",
          "--header", "Subject: " + XSS, "--add-header", "MIME-Version: 1.0",
          "--add-header", "Content-Type: text/html; charset=utf-8", "--body", html)
    swaks(smtp_port, "--to", "other@example.com", "--header", "Subject: plain second",
          "--body", "just text 123456")
    wait(d, lambda: len(rows(d)) == 2, "messages did not appear without reload")
    d.save_screenshot(os.path.join(SHOTS, "list.png"))
    # shown as text, newest first
    wait(d, lambda: subjects(d) == ["plain second", XSS], "subjects: %r" % subjects(d))
    # open the HTML message
    wait(d, lambda: rows(d)[1].click() or True, "could not click the row")
    wait(d, lambda: d.find_element(By.ID, "v-subject").text == XSS, "message view did not open")
    summary = d.find_element(By.ID, "v-summary").text
    assert "attacker@example.com" in summary and "victim@example.com" in summary
    frame = d.find_element(By.ID, "v-html")
    assert frame.get_attribute("sandbox") == ""
    d.switch_to.frame(frame)
    wait(d, lambda: d.find_element(By.ID, "hello").text == "Hello HTML world",
         "HTML preview not rendered")
    assert d.find_element(By.TAG_NAME, "body").get_attribute("data-ran") is None  # no script ran
    d.switch_to.default_content()
    d.save_screenshot(os.path.join(SHOTS, "message.png"))
    assert d.execute_script("return window.__xss === undefined")
    assert no_alert(d)
    # session tab: the delivering client
    d.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=session]").click()
    sess = d.find_element(By.ID, "v-session").text
    assert sess.startswith("Client 127.0.0.1:"), sess
    assert "RCPT TO:<victim@example.com>" in sess and "\nTLS none\n" in sess, sess
    d.save_screenshot(os.path.join(SHOTS, "session.png"))
    # headers tab shows the payload escaped
    d.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=headers]").click()
    assert XSS in d.find_element(By.ID, "v-headers").text
    # search
    box = d.find_element(By.ID, "search")
    box.send_keys("123456")
    d.find_element(By.ID, "search-go").click()
    wait(d, lambda: subjects(d) == ["plain second"], "search did not narrow the list")
    box.clear()
    d.find_element(By.ID, "search-go").click()
    wait(d, lambda: len(rows(d)) == 2, "clearing the search did not list both")
    # delete one (the open one), then all
    d.find_element(By.ID, "delete-one").click()
    wait(d, lambda: len(rows(d)) == 1, "delete did not remove the message")
    assert d.find_element(By.ID, "view-pane").is_displayed() is False
    d.find_element(By.ID, "delete-all").click()
    WebDriverWait(d, 5).until(lambda _: not no_alert(d), message="no confirmation")
    d.switch_to.alert.accept()
    wait(d, lambda: len(rows(d)) == 0, "delete all did not empty the list")
    assert d.find_element(By.ID, "empty").is_displayed()
    assert d.execute_script("return window.__xss === undefined")
