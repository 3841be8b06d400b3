"""Write docs/attention.png: the attention explorer in headless Chromium, one layer and a few heads.

    python scripts/explorer_screenshot.py [--layer 2] [--heads 0,4,5] [--out docs/attention.png]

Needs chromium, chromedriver and selenium, as tests/test_explorer.py does.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT, PAIR = "The animal didn't cross the street because it was too tired.", "It was raining."


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="2")
    parser.add_argument("--heads", default="4,5,8")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "attention.png"))
    args = parser.parse_args()
    page = Path(tempfile.mkdtemp()) / "attention.html"
    subprocess.run([sys.executable, "-m", "minibert", "attention", TEXT, PAIR, "-o", str(page)], check=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,980"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        Select(driver.find_element(By.ID, "layer")).select_by_value(args.layer)
        driver.find_element(By.ID, "none").click()
        for h in args.heads.split(","):
            driver.find_element(By.CSS_SELECTOR, f"input[data-head='{h}']").click()
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
