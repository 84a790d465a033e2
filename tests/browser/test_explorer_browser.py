"""Notebook 05's CAM explorer in a real browser: JupyterLab on 127.0.0.1, the notebook opened
in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium through
/usr/bin/chromedriver; never a downloaded driver), all cells run, a control changed, and the
rendered overlay checked to change. Screenshots go to ``browser_artifacts/`` (or
``$CXRLAB_BROWSER_ARTIFACTS``).

Run with ``make test-browser``. The notebook is copied to a temporary folder first, so
JupyterLab's autosave never touches the committed ``.ipynb``. Models come from
``CXRLAB_HOME``'s checkpoints (trained on the first run, loaded afterwards).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "05_attention_maps.ipynb"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RUN_TIMEOUT = float(os.environ.get("CXRLAB_BROWSER_TIMEOUT", 1200))

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium "
                "chromium-driver", allow_module_level=True)
selenium = pytest.importorskip("selenium", reason="needs selenium: pip install -e '.[dev]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

OVERLAY = "img.cxrlab-cam-overlay"
LABEL_SELECT = ".cxrlab-cam-label select"
# pixels of the rendered overlay, read back through a canvas (the <img> shows a blob: URL)
PIXELS_JS = """
const img = document.querySelector(arguments[0]);
if (!img || !img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
c.getContext('2d').drawImage(img, 0, 0);
return c.toDataURL('image/png');
"""
KERNEL_IDLE_JS = """
const app = window.jupyterapp;
if (!app || !app.shell.currentWidget || !app.shell.currentWidget.sessionContext) return 'loading';
const ctx = app.shell.currentWidget.sessionContext;
if (!ctx.session || !ctx.session.kernel) return 'no-kernel';
return ctx.session.kernel.status;
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, every: float = 1.0):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of notebook 05; yields (url, token)."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), "cxrlab-browser-test"
    env = dict(os.environ, CXRLAB_PROFILE=os.environ.get("CXRLAB_PROFILE", "ci"),
               CXRLAB_PROGRESS="0", PYTHONPATH=os.pathsep.join(
                   [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               CXRLAB_HOME=os.environ.get("CXRLAB_HOME", str(REPO / ".cxrlab")),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"))
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                return json.load(r)
        except OSError:
            return None

    try:
        try:
            _wait(up, 120, "JupyterLab to start")
        except TimeoutError as e:
            log.flush()
            tail = (tmp_path / "jupyterlab.log").read_text()[-2000:]
            raise TimeoutError(f"{e}; the end of its log:\n{tail}") from None
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_explorer_overlay_changes_when_a_control_changes(lab, browser):
    url, token = lab
    out = Path(os.environ.get("CXRLAB_BROWSER_ARTIFACTS", REPO / "browser_artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    browser.get(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
    _wait(lambda: browser.execute_script(KERNEL_IDLE_JS) == "idle", 180,
          "the notebook to open and its kernel to start")
    # stored outputs first out, so that the overlay found below is one this run rendered
    browser.execute_script("return window.jupyterapp.commands.execute("
                           "'notebook:clear-all-cell-outputs')")
    assert not browser.find_elements(By.CSS_SELECTOR, OVERLAY)
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait(lambda: browser.execute_script(PIXELS_JS, OVERLAY), RUN_TIMEOUT,
          "all cells to run and the explorer's overlay to render", every=3)
    _wait(lambda: browser.execute_script(KERNEL_IDLE_JS) == "idle", RUN_TIMEOUT,
          "the last cells to finish", every=3)
    errors = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type="
                                   "'application/vnd.jupyter.stderr'] .jp-RenderedText")
    tracebacks = [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]
    assert not tracebacks, tracebacks[:1]
    overlay = browser.find_element(By.CSS_SELECTOR, OVERLAY)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", overlay)
    before = browser.execute_script(PIXELS_JS, OVERLAY)
    overlay.screenshot(str(out / "explorer_overlay_before.png"))

    select = Select(browser.find_element(By.CSS_SELECTOR, LABEL_SELECT))
    old = select.first_selected_option.text
    new = next(o.text for o in select.options if o.text != old)
    select.select_by_visible_text(new)
    after = _wait(lambda: (lambda p: p if p and p != before else None)(
        browser.execute_script(PIXELS_JS, OVERLAY)), 120,
        f"the overlay to change after choosing label {new!r}")
    assert after != before
    caption = browser.find_element(By.CSS_SELECTOR, ".widget-html").text
    assert new in caption, caption
    overlay.screenshot(str(out / "explorer_overlay_after.png"))
    browser.save_screenshot(str(out / "explorer.png"))
    print(f"label {old!r} -> {new!r}: overlay changed; screenshots in {out}")
