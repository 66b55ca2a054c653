"""Storage backends by URI: the same test bodies run against memory://, sqlite:/// and redis://."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from otel_llmcost.cache import CacheConfigError, CacheStorageError, open_storage, register_storage
from otel_llmcost.cache.storage import MemoryStorage, StorageOptions

from .conftest import FakeClock, RedisServer, StorageMaker


def _vec(seed: int, dim: int = 8) -> bytes:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


def test_set_get_delete_roundtrip(make_storage: StorageMaker) -> None:
    """A value comes back byte for byte, is replaced by a second set, and is gone after delete."""
    s = make_storage()
    assert s.get("a") is None
    s.set("a", b"\x00\xffbody")
    assert s.get("a") == b"\x00\xffbody"
    s.set("a", b"two")
    assert s.get("a") == b"two"
    assert len(s) == 1
    assert s.delete("a") is True
    assert s.get("a") is None
    assert s.delete("a") is False


def test_ttl_expiry_with_fake_clock(make_storage: StorageMaker, clock: FakeClock) -> None:
    """An entry is served until its TTL passes and never after; the default TTL applies when none is given."""
    s = make_storage(ttl=60)
    s.set("default", b"d")
    s.set("short", b"s", ttl=10)
    clock.advance(9.9)
    assert s.get("short") == b"s"
    clock.advance(0.2)
    assert s.get("short") is None
    assert s.get("default") == b"d"
    clock.advance(50)
    assert s.get("default") is None


def test_no_ttl_means_no_expiry(make_storage: StorageMaker, clock: FakeClock) -> None:
    """With no TTL anywhere an entry stays however long the clock runs."""
    s = make_storage(ttl=None)
    s.set("k", b"v")
    clock.advance(10 * 365 * 86400)
    assert s.get("k") == b"v"


def test_lru_eviction_keeps_recently_used(make_storage: StorageMaker, clock: FakeClock) -> None:
    """Past max_entries the least recently used entry goes; a get counts as a use."""
    s = make_storage(max_entries=3)
    for key in ("a", "b", "c"):
        s.set(key, key.encode())
        clock.advance(2)
    assert s.get("a") == b"a"  # a is now the most recently used
    clock.advance(2)
    s.set("d", b"d")
    assert s.get("b") is None
    assert [s.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert len(s) == 3


def test_size_bound_counts_semantic_entries_too(make_storage: StorageMaker, clock: FakeClock) -> None:
    """Plain and semantic entries share one bound and one LRU order."""
    s = make_storage(max_entries=2)
    s.set("plain", b"p")
    clock.advance(2)
    s.add("ns1", "e1", _vec(1), b"one")
    clock.advance(2)
    s.add("ns1", "e2", _vec(2), b"two")
    assert s.get("plain") is None
    assert [e for e, _ in s.fetch_vectors("ns1").entries] == ["e1", "e2"]
    clock.advance(2)
    s.set("plain2", b"p2")
    assert s.entry("ns1", "e1") is None
    assert [e for e, _ in s.fetch_vectors("ns1").entries] == ["e2"]


def test_semantic_entries_roundtrip_and_cursor(make_storage: StorageMaker) -> None:
    """Vectors and payloads come back exactly; fetch_vectors after a cursor returns only newer additions."""
    s = make_storage()
    s.add("ns1", "e1", _vec(1), b"one")
    s.add("ns1", "e2", _vec(2), b"two")
    s.add("ns2", "e9", _vec(9), b"nine")
    first = s.fetch_vectors("ns1")
    assert first.entries == [("e1", _vec(1)), ("e2", _vec(2))]
    entry = s.entry("ns1", "e2")
    assert entry is not None and entry.payload == b"two" and entry.vector == _vec(2)
    s.add("ns1", "e3", _vec(3), b"three")
    s.add("ns1", "e1", _vec(11), b"one again")  # replaced: comes again, with its new vector
    later = s.fetch_vectors("ns1", after=first.cursor)
    assert later.entries == [("e3", _vec(3)), ("e1", _vec(11))]
    assert s.fetch_vectors("ns1", after=later.cursor).entries == []
    assert s.fetch_vectors("nobody").entries == []
    assert s.remove("ns1", "e3") is True
    assert s.entry("ns1", "e3") is None
    assert [e for e, _ in s.fetch_vectors("ns1").entries] == ["e2", "e1"]


def test_semantic_entries_stay_in_their_namespace(make_storage: StorageMaker) -> None:
    """An entry id of one namespace is not found under another, nor listed in its vectors."""
    s = make_storage()
    s.add("tenantA", "shared-id", _vec(1), b"A's answer")
    assert s.entry("tenantB", "shared-id") is None
    assert s.fetch_vectors("tenantB").entries == []
    assert s.get("shared-id") is None  # nor as a plain key


def test_semantic_entries_expire(make_storage: StorageMaker, clock: FakeClock) -> None:
    """Expired semantic entries are neither read nor listed."""
    s = make_storage(ttl=30)
    s.add("ns", "old", _vec(1), b"old")
    clock.advance(20)
    s.add("ns", "new", _vec(2), b"new")
    clock.advance(15)
    assert s.entry("ns", "old") is None
    assert [e for e, _ in s.fetch_vectors("ns").entries] == ["new"]


def test_names_with_separators_are_refused(make_storage: StorageMaker) -> None:
    """Namespace and entry ids with separators are a ValueError, so no pair can spell another pair's key."""
    s = make_storage()
    for ns, entry_id in (("a:b", "c"), ("a", "b:c"), ("", "x"), ("a", "x y"), ("a/b", "c")):
        with pytest.raises(ValueError, match="not a valid cache name"):
            s.add(ns, entry_id, _vec(1), b"x")


def test_clear_removes_both_kinds(make_storage: StorageMaker) -> None:
    """clear() empties plain and semantic entries."""
    s = make_storage()
    s.set("a", b"1")
    s.add("ns", "e", _vec(1), b"2")
    s.clear()
    assert len(s) == 0
    assert s.get("a") is None and s.fetch_vectors("ns").entries == []


def test_concurrent_writers_keep_the_bound(make_storage: StorageMaker) -> None:
    """Eight threads writing at once never leave more than max_entries entries, and every read is whole."""
    s = make_storage(max_entries=50)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(60):
                s.set(f"{t}-{i}", f"value-{t}-{i}".encode())
                got = s.get(f"{t}-{i}")
                assert got in (None, f"value-{t}-{i}".encode())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(s) <= 50


def test_sqlite_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """Entries written before a close are read after reopening the file; their TTL still counts."""
    uri = f"sqlite:///{tmp_path}/persist.db"
    s = open_storage(uri, ttl=100, clock=clock)
    s.set("k", b"kept")
    s.add("ns", "e1", _vec(1), b"semantic")
    s.close()
    again = open_storage(uri, ttl=100, clock=clock)
    assert again.get("k") == b"kept"
    assert again.fetch_vectors("ns").entries == [("e1", _vec(1))]
    entry = again.entry("ns", "e1")
    assert entry is not None and entry.payload == b"semantic"
    clock.advance(101)
    assert again.get("k") is None
    again.close()


def test_sqlite_bound_holds_across_reopen(tmp_path: Path) -> None:
    """A reopened file knows its row count, so the bound holds with entries from before."""
    uri = f"sqlite:///{tmp_path}/bound.db"
    s = open_storage(uri, max_entries=5)
    for i in range(5):
        s.set(str(i), b"x")
    s.close()
    again = open_storage(uri, max_entries=5)
    again.set("new", b"y")
    assert len(again) == 5
    assert again.get("new") == b"y"
    again.close()


def test_sqlite_unwritable_path_is_a_storage_error(tmp_path: Path) -> None:
    """A path that cannot be a database raises CacheStorageError naming the URI."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(CacheStorageError, match="dir.db"):
        open_storage(f"sqlite:///{tmp_path}/dir.db")


@pytest.mark.parametrize(
    "uri",
    ["memcached://x", "nothing", "sqlite://relative.db", "sqlite:///x.db?colour=blue"],
)
def test_bad_uris_are_config_errors(uri: str) -> None:
    """Unknown schemes, malformed sqlite paths and unknown options raise CacheConfigError with the fix."""
    with pytest.raises(CacheConfigError):
        open_storage(uri)


def test_bad_limits_are_config_errors() -> None:
    """max_entries below 1 and a non-positive TTL are refused."""
    with pytest.raises(CacheConfigError):
        open_storage("memory://", max_entries=0)
    with pytest.raises(CacheConfigError):
        open_storage("memory://", ttl=0)


def test_register_storage_adds_a_scheme() -> None:
    """A registered scheme is opened through its factory with the options given."""
    seen: list[StorageOptions] = []

    def factory(uri: str, options: StorageOptions) -> MemoryStorage:
        seen.append(options)
        return MemoryStorage(max_entries=options.max_entries, uri=uri)

    register_storage("mine", factory)
    storage = open_storage("mine://x", max_entries=7)
    assert storage.uri == "mine://x" and storage.max_entries == 7 and seen[0].max_entries == 7


def test_redis_down_raises_storage_error_and_recovers(own_redis: RedisServer) -> None:
    """With Redis killed mid-test every operation raises CacheStorageError naming the URI; after a restart it works again."""
    s = open_storage(own_redis.url, max_entries=100)
    s.set("k", b"v")
    s.add("ns", "e", _vec(1), b"p")
    assert s.get("k") == b"v"
    own_redis.kill()
    for op in (
        lambda: s.get("k"),
        lambda: s.set("k2", b"v"),
        lambda: s.delete("k"),
        lambda: s.add("ns", "e2", _vec(2), b"p"),
        lambda: s.entry("ns", "e"),
        lambda: s.fetch_vectors("ns"),
    ):
        with pytest.raises(CacheStorageError) as info:
            op()
        message = str(info.value)
        assert own_redis.url in message and "provider" in message
        assert info.value.__cause__ is not None
    own_redis.start()  # same port, empty (no persistence)
    assert s.get("k") is None
    s.set("k", b"again")
    assert s.get("k") == b"again"
    s.add("ns", "e", _vec(1), b"p")
    assert s.fetch_vectors("ns").entries == [("e", _vec(1))]
    s.close()


def test_redis_is_shared_between_instances(redis_server: RedisServer) -> None:
    """Two storages on the same Redis and prefix (two replicas) see each other's entries and vectors."""
    uri = f"{redis_server.url}?prefix=shared-test"
    a, b = open_storage(uri), open_storage(uri)
    try:
        a.set("k", b"from a")
        a.add("ns", "e", _vec(1), b"payload")
        assert b.get("k") == b"from a"
        assert b.fetch_vectors("ns").entries == [("e", _vec(1))]
    finally:
        a.clear()
        a.close()
        b.close()


def test_redis_prefixes_are_apart(redis_server: RedisServer) -> None:
    """Storages with different prefixes on one Redis never see each other's entries."""
    a = open_storage(f"{redis_server.url}?prefix=p-one")
    b = open_storage(f"{redis_server.url}?prefix=p-two")
    try:
        a.set("k", b"one")
        assert b.get("k") is None
        b.clear()
        assert a.get("k") == b"one"
    finally:
        a.clear()
        a.close()
        b.close()


def test_sqlite_bound_holds_with_two_writers_on_one_file(tmp_path: Path) -> None:
    """Two storages (two processes) writing one file keep it near the bound: each re-reads the row count."""
    uri = f"sqlite:///{tmp_path}/shared.db"
    a, b = open_storage(uri, max_entries=100), open_storage(uri, max_entries=100)
    for i in range(600):
        (a if i % 2 else b).set(f"k{i}", b"x")
    assert len(a) <= 100 + 256
    a.close()
    b.close()


def test_epoch_is_stable_while_contents_live(make_storage: StorageMaker) -> None:
    """fetch_vectors names the same epoch call after call, so cursors stay valid."""
    s = make_storage()
    s.add("ns", "e", _vec(1), b"p")
    first = s.fetch_vectors("ns").epoch
    assert first and s.fetch_vectors("ns", after=5).epoch == first


def test_sqlite_epoch_survives_reopen(tmp_path: Path) -> None:
    """A reopened SQLite file keeps its epoch (cursors saved before a restart stay valid); a new file has another."""
    uri = f"sqlite:///{tmp_path}/epoch.db"
    s = open_storage(uri)
    epoch = s.fetch_vectors("ns").epoch
    s.close()
    again = open_storage(uri)
    assert again.fetch_vectors("ns").epoch == epoch
    again.close()
    other = open_storage(f"sqlite:///{tmp_path}/other.db")
    assert other.fetch_vectors("ns").epoch != epoch
    other.close()


def test_redis_epoch_changes_when_the_server_restarts_empty(own_redis: RedisServer) -> None:
    """Two clients share one epoch; after Redis restarts empty the epoch is a new one."""
    a, b = open_storage(own_redis.url), open_storage(own_redis.url)
    epoch = a.fetch_vectors("ns").epoch
    assert b.fetch_vectors("ns").epoch == epoch
    own_redis.kill()
    own_redis.start()
    assert a.fetch_vectors("ns").epoch not in ("", epoch)
    a.close()
    b.close()
