"""The OpenAI-compatible /v1 API (thin routes over one chat service) and the MCP tool."""

from .routes import build_api_router, openai_not_found

__all__ = ["build_api_router", "openai_not_found"]
