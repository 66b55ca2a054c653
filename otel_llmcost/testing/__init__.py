"""Test helpers: a loopback server that the real OpenAI, Anthropic and Gemini SDKs can talk to, and a
loopback webhook receiver that keeps what alerting and export code sends."""

from .llm_server import LoopbackLLMServer, RecordedRequest, Reply
from .webhook import WebhookDelivery, WebhookReceiver

__all__ = ["LoopbackLLMServer", "RecordedRequest", "Reply", "WebhookDelivery", "WebhookReceiver"]
