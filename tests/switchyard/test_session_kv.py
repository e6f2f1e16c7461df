"""The session KV store: longest shared prefix, LRU within a byte budget."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from switchyard.session_kv import SessionKVStore, common_prefix


@dataclass(frozen=True)
class FakeCache:
    length: int


@pytest.mark.parametrize(
    ("a", "b", "limit", "expected"),
    [
        ([1, 2, 3], [1, 2, 3, 4], None, 3),
        ([1, 2, 3], [1, 2, 4], None, 2),
        ([5], [1], None, 0),
        ([1, 2, 3], [1, 2, 3], 2, 2),
        ([], [1], None, 0),
        ([1, 2], [1, 2], 0, 0),
    ],
)
def test_common_prefix(a: list[int], b: list[int], limit: int | None, expected: int) -> None:
    assert common_prefix(a, b, limit=limit) == expected


def test_lookup_reuses_the_shared_prefix_but_leaves_one_token_to_run() -> None:
    store = SessionKVStore(1000)
    store.put("s", [1, 2, 3, 4], FakeCache(4), 40)
    hit = store.lookup("s", [1, 2, 3, 4, 5, 6])
    assert hit is not None and hit.length == 4
    hit = store.lookup("s", [1, 2, 3, 4])  # the same prompt again: the last token is recomputed
    assert hit is not None and hit.length == 3
    assert store.lookup("s", [9, 2]) is None
    assert store.lookup("other", [1, 2]) is None


def test_least_recently_used_session_is_evicted_first() -> None:
    store = SessionKVStore(100)
    store.put("a", [1], FakeCache(1), 40)
    store.put("b", [1], FakeCache(1), 40)
    assert store.lookup("a", [1, 2]) is not None  # "a" is now the most recent
    store.put("c", [1], FakeCache(1), 40)
    assert store.session_ids() == ("c", "a")
    assert store.nbytes == 80


def test_replacing_a_session_and_oversized_entries() -> None:
    store = SessionKVStore(100)
    store.put("a", [1], FakeCache(1), 40)
    store.put("a", [1, 2], FakeCache(2), 60)
    assert store.session_ids() == ("a",) and store.nbytes == 60
    store.put("a", [1, 2, 3], FakeCache(3), 500)  # larger than the budget: not kept at all
    assert store.session_ids() == () and store.nbytes == 0
