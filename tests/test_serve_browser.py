"""`gdstep serve` in a real browser: headless Chromium opens the page, keys go to the
terminal, and the terminal's text (read from xterm.js's own buffer) shows the app answer.
Two tabs are two independent sessions.

Skipped, saying why, only where no browser or driver is installed (`.ci/run` installs
Debian's chromium and chromium-driver when it runs as root)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no Chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)"),
]

# xterm.js keeps its Terminal inside textual-serve's bundle: catch it as the page stores it.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'terminal', {configurable: true,
  set(v) {
    Object.defineProperty(this, 'terminal', {value: v, writable: true, configurable: true, enumerable: true});
    if (v && v.buffer) { window.__terminals = (window.__terminals || []).concat([v]); }
  }});
"""
READ_SCREEN = """
const t = (window.__terminals || [])[0];
if (!t) { return null; }
const b = t.buffer.active, out = [];
for (let i = 0; i < t.rows; i++) { const l = b.getLine(b.viewportY + i); out.push(l ? l.translateToString(true) : ''); }
return out.join('\\n');
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "gdstep.cli", "serve", "1", "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    end = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("localhost", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            assert time.monotonic() < end, "the server did not start"
            time.sleep(0.1)
    yield f"http://localhost:{port}/"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,850"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait_for(driver, predicate, what: str, timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    text = None
    while time.monotonic() < end:
        text = driver.execute_script(READ_SCREEN)
        if text and predicate(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"the browser never showed {what}; the screen was:\n{text}")


def _open(driver, url: str) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})   # each tab
    driver.get(url)


def _press(driver, keys: str) -> None:
    driver.find_element("css selector", ".xterm-helper-textarea").send_keys(keys)


def _phase_bar(text: str) -> str:
    return "\n".join(text.splitlines()[:2])


def _phases(text: str) -> str:
    """`forward → loss → backward → update` as drawn: the lit phase is padded, so it moves."""
    m = re.search(r"forward.*update", text.splitlines()[0])
    return m.group(0) if m else ""


def _step(text: str) -> int | None:
    m = re.search(r"step (\d+)", _phase_bar(text))
    return int(m.group(1)) if m else None


def test_a_lesson_in_the_browser_answers_keys_and_each_tab_is_its_own_session(server, browser):
    pytest.importorskip("textual_serve", reason="textual-serve is not installed")
    _open(browser, server)
    screen = _wait_for(browser, lambda t: _step(t) is not None and re.search(r"\d+ of \d+", t), "the lesson")
    assert "lesson 1" in screen
    start = _step(screen)
    _press(browser, "s")                               # one iteration: the phase bar counts it
    stepped = _wait_for(browser, lambda t: _step(t) == start + 1, f"step {start + 1} in the phase bar")
    _press(browser, "n")                               # a phase: forward has run, the phase bar moves on
    _wait_for(browser, lambda t: _step(t) == start + 1 and _phases(t) != _phases(stepped),
              "the next phase lit in the phase bar")
    _press(browser, " ")                               # back to the lesson, exactly where it was
    _wait_for(browser, lambda t: _step(t) == start and "back to the lesson" in t.lower(), "the lesson's own state")
    # a second tab: a session of its own, untouched by the first
    browser.switch_to.new_window("tab")
    _open(browser, server)
    _wait_for(browser, lambda t: _step(t) == start, "a fresh session in the second tab")
    _press(browser, "e")
    _wait_for(browser, lambda t: _step(t) is not None and _step(t) > start, "an epoch in the second tab")
    browser.switch_to.window(browser.window_handles[0])
    first = _wait_for(browser, lambda t: _step(t) == start, "the first tab unchanged")
    assert "back to the lesson" in first.lower()
