"""The image budget's side of a tab: the cost line under the input, the status while the model loads,
and the budget slider capped at the model's own limit (a mix-in of `ChatSession`)."""

from __future__ import annotations

import gradio as gr

from .cost import cost_line, image_sizes
from .render import status_markdown
from .text import say
from .uploads import message_paths


class ImageBudget:
    @property
    def model_cap(self) -> int | None:
        """The backend's most tokens per image, None while loading or when it does not say."""
        return self.state.backend.info.max_image_tokens if self.state.backend is not None else None

    def input_changed(self, message, image_tokens) -> str:
        """Files in the input box are the tab's from the moment they are attached (so another tab's close
        never deletes an identical upload); the cost line follows the files and the budget."""
        for path in message_paths(message):
            self.files.add(self.tab, path)
        return self.cost(message, image_tokens)

    def cost(self, message, image_tokens) -> str:
        return cost_line(self.lang, int(image_tokens), image_sizes(message, self.state.settings), self.model_cap)

    def tick(self, message, image_tokens) -> tuple:
        """While the model loads: the status, and the image cost once the model's own cap is known."""
        loading = self.state.backend is None and not self.state.load_error
        return (
            status_markdown(self.state, self.lang, self.usage),
            gr.Timer(active=loading),
            self.cost(message, image_tokens),
            self.budget_slider(image_tokens),
        )

    def budget_slider(self, value) -> gr.Slider:
        """The image budget slider, ending at the model's own cap where that is lower than the server's
        (the bundled demo model takes at most 100 tokens an image) and saying so."""
        cap = self.model_cap
        if cap is None or cap >= self.state.settings.max_image_tokens:
            return gr.Slider(value=value)
        return gr.Slider(maximum=cap, value=min(int(value), cap), info=say(self.lang, "image_tokens_cap", cap=cap))
