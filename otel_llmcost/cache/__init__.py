"""Caches for LLM responses: exact (same request) and semantic (same meaning, same namespace).

Storage by URI: ``memory://``, ``sqlite:///path.db``, ``redis://host:6379/0`` (see `.storage`).
An entry is never served outside its tenant and request namespace (see `.keys`).
"""

from .embedders import CallableEmbedder, HashingEmbedder, MiniLMEmbedder, OpenAIEmbedder
from .errors import CacheConfigError, CacheStorageError
from .exact import CacheStats, ExactCache
from .index import VectorIndex
from .keys import Namespace, cacheable, canonical_json, exact_key, split_conversation, stable_hash
from .policy import Guard, GuardedPolicy, ThresholdPolicy, default_guards
from .semantic import Decision, Embedder, Hit, HitPolicy, LookupContext, SemanticCache, SemanticStats
from .storage import CacheStorage, open_storage, register_storage

__all__ = [
    "CallableEmbedder",
    "Guard",
    "GuardedPolicy",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "ThresholdPolicy",
    "default_guards",
    "CacheConfigError",
    "CacheStats",
    "CacheStorage",
    "CacheStorageError",
    "Decision",
    "Embedder",
    "ExactCache",
    "Hit",
    "HitPolicy",
    "LookupContext",
    "Namespace",
    "SemanticCache",
    "SemanticStats",
    "VectorIndex",
    "cacheable",
    "canonical_json",
    "exact_key",
    "open_storage",
    "register_storage",
    "split_conversation",
    "stable_hash",
]
