"""Takes docs/screenshot.png with the browser the tests use (Chromium driven by Playwright).

    python -m docs.make_screenshot

The UI is served with a scripted backend (the demo banner shows, and the answer text is fixed), so
the picture shows the interface, not a model's quality.
"""

import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from glm_vision.server import AppState
from glm_vision.settings import Settings
from tests.doubles import ScriptedBackend
from tests.ui.ui_support import CHROMIUM, CHROMIUM_ARGS, UiServer, ask, open_page, wait_turns

ROOT = Path(__file__).resolve().parent.parent

ANSWER = [
    "<think>There is a red circle on the left half and a blue square on the right half.</think>",
    "The circle is <|begin_of_box|>red<|end_of_box|> and sits on the **left** side; ",
    "the blue square is on the right.\n\n| shape | colour | side |\n|---|---|---|\n| circle | red | left |\n| square | blue | right |",
]


def main() -> None:
    state = AppState(Settings(), backend=ScriptedBackend(ANSWER))
    with UiServer(state) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = open_page(browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US"), server.url)
        ask(
            page,
            "What colour is the circle, and which side of the picture is it on?",
            [str(ROOT / "assets" / "examples" / "shapes.png")],
        )
        wait_turns(page, 2)
        time.sleep(1)
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
        browser.close()


if __name__ == "__main__":
    main()
