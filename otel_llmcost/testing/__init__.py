"""Test helpers: a loopback server that the real OpenAI, Anthropic and Gemini SDKs can talk to."""

from .llm_server import LoopbackLLMServer, RecordedRequest, Reply

__all__ = ["LoopbackLLMServer", "RecordedRequest", "Reply"]
