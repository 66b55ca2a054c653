"""What the savings advisor needs to know about a prompt, recorded at call time without its text.

`otel-llmcost advise` looks for repeated prompt prefixes (provider prompt caching) and repeated
queries (an application cache), and for simple queries sent to dear models (routing). Prompts are
never stored, so at call time we record, on the call's span:

* ``llmcost.prompt.prefix_hashes`` / ``llmcost.prompt.prefix_tokens``: a hash of the prompt's first
  1024, 2048, 4096, ... estimated tokens (the lengths where provider caches start to apply), as far as
  the prompt reaches, and those lengths. Two calls with an equal hash at 2048 share their first ~2048
  tokens: the second could have read them from the provider's cache.
* ``llmcost.query.hash``: a hash of the whole request (provider, model, prompt, parameters that change
  the answer): equal hashes are exact duplicates an exact cache would have served.
* ``llmcost.route.complexity``: the heuristic router's class of the last user message, on a random
  sample of calls (``OTEL_LLMCOST_COMPLEXITY_SAMPLE``, default 0.1: the classifier costs tens of µs,
  a sample tells the advisor the share of simple calls just as well); when the router itself ran,
  its class is on every routed call.

The hashes are BLAKE2b keyed with a per-installation secret, not plain hashes: short or well-known
prompts ("yes", a published system prompt) could otherwise be confirmed by anyone who reads the
telemetry, by hashing guesses. The key comes from ``OTEL_LLMCOST_FINGERPRINT_KEY`` (give every replica
the same value so their hashes match) or from a key file created once, readable only by its owner
(``$XDG_CONFIG_HOME/otel-llmcost/fingerprint.key``). ``OTEL_LLMCOST_FINGERPRINTS=false`` turns all of
this off.

Cost: one pass of BLAKE2b over the prompt's text (~1 GB/s; a 4 KB prompt is a few µs), only for spans
that are recorded, plus the heuristic classifier (capped at 2,000 characters) on the sampled calls. The text walk is in prompt-cache order: tools, system prompt, then the conversation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from . import names

_log = logging.getLogger(__name__)

OTEL_LLMCOST_FINGERPRINTS: Final = "OTEL_LLMCOST_FINGERPRINTS"
"""`false` turns off the prompt fingerprints (prefix and query hashes, complexity class)."""
OTEL_LLMCOST_FINGERPRINT_KEY: Final = "OTEL_LLMCOST_FINGERPRINT_KEY"
"""Secret that keys the hashes; the same value on every replica makes their hashes comparable."""
OTEL_LLMCOST_COMPLEXITY_SAMPLE: Final = "OTEL_LLMCOST_COMPLEXITY_SAMPLE"
"""Share of calls (0..1) whose complexity class is recorded (default 0.1)."""
DEFAULT_COMPLEXITY_SAMPLE: Final = 0.1

CHARS_PER_TOKEN: Final = 4
"""The estimate `otel_llmcost.pricing.estimate` uses: boundaries are in estimated tokens."""
PREFIX_BOUNDARIES: Final = tuple(1024 * 2**i for i in range(8))
"""1024 ... 131072 estimated tokens: provider caches start at 1024 (OpenAI, most Anthropic models)."""
_COMPLEXITY_TEXT_CAP = 2000
_SEPARATOR = "\x1f"
_MAX_DEPTH = 16
# Keys of the request that make up the prompt, in the order providers cache it (tools, system, turns).
_PROMPT_KEYS = ("tools", "system", "instructions", "messages", "input", "contents", "prompt")
_NOT_ANSWER_PARAMS = frozenset(_PROMPT_KEYS) | {
    "stream", "stream_options", "timeout", "request_timeout", "max_retries", "extra_headers", "extra_query",
    "api_key", "base_url", "http_client", "metadata", "store", "user",
}

_key_lock = threading.Lock()
_key: bytes | None = None
_sample: float | None = None


def _key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "otel-llmcost" / "fingerprint.key"


def hash_key() -> bytes:
    """The secret keying every hash, read (or created) once per process."""
    global _key
    if _key is not None:
        return _key
    with _key_lock:
        if _key is not None:
            return _key
        configured = os.environ.get(OTEL_LLMCOST_FINGERPRINT_KEY)
        if configured:
            _key = hashlib.blake2b(configured.encode("utf-8"), digest_size=32).digest()
            return _key
        path = _key_file()
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    pass  # another process made it first: read theirs
                else:
                    with os.fdopen(fd, "w") as out:
                        out.write(secrets.token_hex(32))
            text = path.read_text(encoding="ascii").strip()
            _key = bytes.fromhex(text)
            if len(_key) < 16:
                raise ValueError("key too short")
        except (OSError, ValueError) as exc:
            _log.warning("otel-llmcost: cannot use the fingerprint key file %s (%s); prompt hashes are keyed "
                         "for this process only, so they match within it alone. Set %s to share one key.",
                         path, exc, OTEL_LLMCOST_FINGERPRINT_KEY)
            _key = secrets.token_bytes(32)
        return _key


def reset_key() -> None:
    """Forget the key and the sample share read so far (tests that switch them)."""
    global _key, _sample
    with _key_lock:
        _key = None
        _sample = None


def _flatten(value: Any, out: list[str], depth: int = 0) -> None:
    """Append the strings of a prompt structure to `out` in order: keys and values of mappings, items of
    lists, SDK objects through `model_dump()`. Images and files count by their encoded data, like text.

    This runs on every call's path: strings inside a mapping or list are appended where they are met,
    so a chat of plain messages costs a few calls, not a generator per nesting level as before. The
    order of the strings is the hashes' contract with data recorded earlier (tests pin it)."""
    if depth > _MAX_DEPTH or value is None:
        return
    cls = value.__class__
    if cls is str:
        out.append(value)
        return
    if cls is int or cls is float or cls is bool:  # sampling parameters: skip the ABC checks below
        out.append(repr(value))
        return
    inner = depth + 1
    leaf = inner <= _MAX_DEPTH  # strings one level down are still within the walk
    if cls is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if item is None:
                continue
            out.append(key if key.__class__ is str else str(key))
            if item.__class__ is str:
                if leaf:
                    out.append(item)
            else:
                _flatten(item, out, inner)
    elif cls is list or cls is tuple or isinstance(value, (list, tuple)):
        for item in value:
            if item.__class__ is str:
                if leaf:
                    out.append(item)
            else:
                _flatten(item, out, inner)
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, (bool, int, float)):
        out.append(repr(value))
    elif isinstance(value, (bytes, bytearray)):
        out.append(bytes(value).hex())
    else:
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            _flatten(dump(exclude_none=True), out, inner)


def _config_get(config: Any, name: str) -> Any:
    if config is None:
        return None
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def _prompt_parts(kwargs: Mapping[str, Any]) -> list[str]:
    parts: list[str] = []
    config = kwargs.get("config")  # google-genai keeps tools and the system instruction here
    for key in _PROMPT_KEYS:
        if key == "messages" and config is not None:
            _flatten(_config_get(config, "tools"), parts)
            _flatten(_config_get(config, "system_instruction"), parts)
        value = kwargs.get(key)
        if value is not None:
            parts.append(key)
            _flatten(value, parts)
    return parts


def complexity_sample() -> float:
    """The share of calls to classify, from the environment (read once; a bad value is logged)."""
    global _sample
    if _sample is None:
        raw = os.environ.get(OTEL_LLMCOST_COMPLEXITY_SAMPLE, "").strip()
        value = DEFAULT_COMPLEXITY_SAMPLE
        if raw:
            try:
                value = float(raw)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(raw)
            except ValueError:
                _log.warning("%s=%r is not a share between 0 and 1; using %s", OTEL_LLMCOST_COMPLEXITY_SAMPLE, raw,
                             DEFAULT_COMPLEXITY_SAMPLE)
                value = DEFAULT_COMPLEXITY_SAMPLE
        _sample = value
    return _sample


def fingerprint(provider: str, model: str, kwargs: Mapping[str, Any], *,
                complexity_rate: float | None = None) -> dict[str, Any]:
    """The span attributes described in the module docstring, for one request's keyword arguments.

    `complexity_rate`: the share of calls to classify (default: `complexity_sample()`)."""
    key = hash_key()
    # One joined string, hashed in slices between boundaries: per-piece updates cost more in Python.
    text = _SEPARATOR.join(_prompt_parts(kwargs))
    prefix = hashlib.blake2b(key=key, digest_size=16, person=b"llmcost-prefix")
    hashes: list[str] = []
    tokens: list[int] = []
    done = 0
    for boundary in PREFIX_BOUNDARIES:
        end = boundary * CHARS_PER_TOKEN
        if end > len(text):
            break
        prefix.update(text[done:end].encode("utf-8", "surrogatepass"))
        hashes.append(prefix.hexdigest())
        tokens.append(boundary)
        done = end
    query = prefix.copy()  # the rest of the prompt, then who answers it and how
    rest = [text[done:], provider, model]
    for name in sorted(kwargs):
        if name not in _NOT_ANSWER_PARAMS and name != "model" and kwargs[name] is not None:
            rest.append(name)
            _flatten(kwargs[name], rest, 1)
    query.update(_SEPARATOR.join(rest).encode("utf-8", "surrogatepass"))
    attributes: dict[str, Any] = {names.LLMCOST_QUERY_HASH: query.hexdigest()}
    if hashes:
        attributes[names.LLMCOST_PROMPT_PREFIX_HASHES] = tuple(hashes)
        attributes[names.LLMCOST_PROMPT_PREFIX_TOKENS] = tuple(tokens)
    rate = complexity_sample() if complexity_rate is None else complexity_rate
    if rate >= 1.0 or (rate > 0.0 and random.random() < rate):
        level = _complexity(kwargs)
        if level is not None:
            attributes[names.LLMCOST_ROUTE_COMPLEXITY] = level
    return attributes


_classifier: Any = None


def _complexity(kwargs: Mapping[str, Any]) -> str | None:
    global _classifier
    from .routing.router import last_user_text

    text = last_user_text(kwargs)
    if not text:
        return None
    if _classifier is None:
        from .routing.classifier import HeuristicClassifier

        _classifier = HeuristicClassifier()
    return str(_classifier.classify(text[:_COMPLEXITY_TEXT_CAP]))


def record(span: Any, into: dict[str, Any], provider: str, operation: str, model: str,
           kwargs: Mapping[str, Any]) -> None:
    """Put the fingerprint attributes of a recording span's call into `into`, the attributes its span gets
    when it ends (one `set_attributes` on the span instead of two: each costs tens of calls in the SDK);
    never raises into the call."""
    if operation == "embeddings" or not span.is_recording():
        return
    global _failed_once
    try:
        into.update(fingerprint(provider, model, kwargs))
    except Exception:
        # Once loudly (a bug or an odd request shape worth reporting), then quietly: never per call.
        level = logging.DEBUG if _failed_once else logging.WARNING
        _failed_once = True
        _log.log(level, "otel-llmcost: prompt fingerprint failed; calls go on without it", exc_info=True)


_failed_once = False
