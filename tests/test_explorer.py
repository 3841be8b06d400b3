"""`minibert attention`: the explorer page in a real browser (headless Chromium through selenium), and the
PNG heatmaps. Without a browser the page test is skipped with the reason; under CI it fails instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minibert.tools.explorer import attention_data, write_png_heatmaps

TEXT, PAIR = "The animal didn't cross the street because it was too tired.", "春眠不觉晓"


def no_browser(reason):
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "attention.html"
    result = subprocess.run(
        [sys.executable, "-m", "minibert", "attention", TEXT, PAIR, "-o", str(out)], capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert b"(22 tokens, 6 layers x 12 heads)" in result.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        no_browser("selenium is not installed (pip install selenium)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        no_browser("no Chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_the_page_is_self_contained(page):
    html = page.read_text(encoding="utf-8")
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}  # an XML namespace name, never fetched
    assert "<script src" not in html and "<link" not in html and "@import" not in html


def test_the_page_in_a_browser(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.set_window_size(1100, 900)
    browser.get(page.as_uri())
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
    svg = browser.find_element(By.ID, "headview")
    left = [e.text for e in svg.find_elements(By.CSS_SELECTOR, "text[data-side='a']")]
    assert left[:4] == ["[CLS]", "the", "animal", "didn"] and "春" in left and len(left) == 22
    assert "[PAD]" not in left
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    def drawing():
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#headview line')).map("
            "l => [l.dataset.head, l.getAttribute('y1'), l.getAttribute('y2'), l.getAttribute('stroke-opacity')]"
            ".join(',')).join(';')"
        )

    layer0 = drawing()
    assert layer0.count(";") > 10 and {line.split(",")[0] for line in layer0.split(";")} == {"0"}  # one head first
    Select(browser.find_element(By.ID, "layer")).select_by_value("3")
    layer3 = drawing()
    assert layer3 and layer3 != layer0
    browser.find_element(By.CSS_SELECTOR, "input[data-head='1']").click()  # one head more
    browser.find_element(By.CSS_SELECTOR, "input[data-head='0']").click()  # one head fewer
    fewer = drawing()
    assert fewer != layer3 and {line.split(",")[0] for line in fewer.split(";")} == {"1"}
    # hovering a token keeps only its lines
    from selenium.webdriver import ActionChains

    ActionChains(browser).move_to_element(svg.find_elements(By.CSS_SELECTOR, "text[data-side='a']")[2]).perform()
    focused = drawing().split(";")
    assert focused and {line.split(",")[1] for line in focused} == {str(10 + 2 * 22 + 11)}
    # the model view: a grid of layers x heads; a click opens that head
    browser.find_element(By.ID, "tab-model").click()
    cells = browser.find_elements(By.CSS_SELECTOR, "#grid canvas")
    assert len(cells) == 6 * 12
    panel = "document.getElementById('panel-model')"
    assert browser.execute_script(f"return {panel}.scrollWidth <= {panel}.clientWidth")  # fits its panel at 1100 px
    browser.find_element(By.CSS_SELECTOR, "#grid canvas[data-layer='4'][data-head='7']").click()
    assert browser.find_element(By.ID, "panel-head").is_displayed()
    assert Select(browser.find_element(By.ID, "layer")).first_selected_option.get_attribute("value") == "4"
    heads = {line.split(",")[0] for line in drawing().split(";")}
    assert heads == {"7"}
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_png_heatmaps(tmp_path):
    pytest.importorskip("matplotlib", reason="the viz extra (matplotlib) is not installed")
    rng = np.random.default_rng(0)
    tokens = ["[CLS]", "春", "眠", "[SEP]"]
    layers = [rng.dirichlet(np.ones(4), size=(2, 4)) for _ in range(3)]  # 3 layers of (2 heads, 4, 4)
    written = write_png_heatmaps(tokens, layers, tmp_path / "png")
    assert [p.name for p in written] == ["layer_00.png", "layer_01.png", "layer_02.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_the_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'minibert-encoder\[viz\]'"):
        write_png_heatmaps(["a"], [np.ones((1, 1, 1))], tmp_path)


def test_attention_data_refuses_a_mismatch():
    with pytest.raises(ValueError, match=r"attentions must be \(heads, 3, 3\) per layer"):
        attention_data(["a", "b", "c"], [np.ones((2, 3, 4))])


def test_user_text_is_never_taken_for_a_placeholder():
    from minibert.tools.explorer import attention_html

    tokens = ["[CLS]", "__TITLE__", "[SEP]"]
    page = attention_html(tokens, [np.full((2, 3, 3), 1 / 3)], title="hello __DATA__ world")
    assert "<title>hello __DATA__ world · minibert attention</title>" in page
    assert "<h1>hello __DATA__ world</h1>" in page and page.count('"tokens": ["[CLS]", "__TITLE__", "[SEP]"]') == 1


def test_the_weights_are_stored_deflated_and_exact_to_a_byte():
    import base64
    import zlib

    from minibert.tools.explorer import attention_data

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 200, 200)) * 4
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    data = attention_data([f"t{i}" for i in range(200)], list(probs))
    stored = zlib.decompress(base64.b64decode(data["weights"]))
    assert stored == np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8).tobytes()
    assert len(data["weights"]) < 0.6 * len(base64.b64encode(stored))  # most weights are near 0
