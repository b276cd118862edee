"""The hash chain finds an event edited, removed or moved (pure, no Redis)."""

from __future__ import annotations

import base64
import hashlib
import json

from bot.domain.audit import anchor, to_link, verify_chain
from bot.domain.events import stored_id
from bot.domain.hashing import chain_hash

THREAD = "th_1"


def chained(*texts: str) -> list[str]:
    """As stored before: random ids, and a first event that links to nothing."""
    raws, prev = [], None
    for i, text in enumerate(texts):
        raw = json.dumps({"id": f"ev_{i}", "prev": prev, "text": text})
        raws.append(raw)
        prev = chain_hash(raw)
    return raws


def anchored(thread_id: str, *texts: str) -> list[str]:
    """As stored now: no ids, and a first event that links to its thread."""
    raws, prev = [], anchor(thread_id)
    for text in texts:
        raw = json.dumps({"p": to_link(prev), "text": text})
        raws.append(raw)
        prev = chain_hash(raw)
    return raws


def test_an_untouched_chain_is_intact() -> None:
    assert verify_chain(chained("a", "b", "c"), THREAD) == []


def test_an_edited_event_breaks_the_link_after_it() -> None:
    raws = chained("a", "b", "c")
    raws[1] = raws[1].replace('"b"', '"B"')
    (broken,) = verify_chain(raws, THREAD)
    assert (broken.index, broken.event_id) == (2, "ev_2") and "edited" in broken.why


def test_a_removed_event_breaks_the_chain_where_it_was() -> None:
    raws = chained("a", "b", "c")
    del raws[1]
    assert [b.index for b in verify_chain(raws, THREAD)] == [1]


def test_moved_events_break_the_chain() -> None:
    raws = chained("a", "b", "c", "d")
    raws[1], raws[2] = raws[2], raws[1]
    assert [b.index for b in verify_chain(raws, THREAD)] == [1, 2, 3]


def test_a_removed_first_event_shows() -> None:
    (broken,) = verify_chain(chained("a", "b")[1:], THREAD)
    assert broken.index == 0 and "first event" in broken.why


def test_a_chain_anchored_to_its_thread_verifies_there_and_not_under_another_thread() -> None:
    raws = anchored(THREAD, "a", "b")
    assert verify_chain(raws, THREAD) == []
    (moved,) = verify_chain(raws, "th_2")
    assert moved.index == 0 and "first event" in moved.why


def test_a_break_names_an_event_stored_without_its_id_by_the_id_its_hash_makes() -> None:
    raws = anchored(THREAD, "a", "b", "c")
    raws[1] = raws[1].replace('"b"', '"B"')
    (broken,) = verify_chain(raws, THREAD)
    assert broken.event_id == stored_id(chain_hash(raws[2]))


def test_the_hash_is_short_and_stable() -> None:
    assert chain_hash('{"a":1}') == chain_hash(b'{"a":1}') and len(chain_hash("x")) == 22


def test_the_hash_is_sha256s_first_128_bits_in_base64url() -> None:
    """Chains stored before must still verify: the hash never changes."""
    for raw in ('{"a":1}', '{"type":"user_message","text":"héllo ✓"}', "x" * 1000):
        digest = hashlib.sha256(raw.encode()).digest()[:16]
        assert chain_hash(raw) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
