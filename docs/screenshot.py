"""Make docs/chat.png, the README's picture: the starter profile answering about the example photo.

python docs/screenshot.py        (needs /usr/bin/chromium and `pip install playwright`)
"""

import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from assistant.core import Assistant
from assistant.settings import load_settings
from assistant.ui import launch
from assistant.ui.layout import EXAMPLES_FOLDER

OUT = Path(__file__).parent / "chat.png"


def main() -> None:
    settings = load_settings(cli={"profile": "starter", "temperature": 0.0, "port": 7870}, config_file=None)
    assistant = Assistant.from_settings(settings)
    app = launch(assistant, prevent_thread_lock=True, quiet=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(app.local_url)
        page.wait_for_selector("textarea")
        page.set_input_files("input[type=file]", [str(EXAMPLES_FOLDER / "cat.jpg")])
        time.sleep(1)
        page.locator("textarea").fill("What animal is this?")
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid='bot']", timeout=60_000)
        page.wait_for_selector("button.submit-button", timeout=120_000)
        time.sleep(1)
        page.screenshot(path=str(OUT))
        browser.close()
    app.close()
    assistant.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
