"""The backend contract over an OpenAI-compatible server (vLLM, SGLang, another glm-vision)."""

from .backend import RemoteBackend, remote_api_key

__all__ = ["RemoteBackend", "remote_api_key"]
