"""glm-vision: run GLM-4.6V-Flash on one GPU, with a web UI and an OpenAI-compatible API."""

__version__ = "0.1.0"
