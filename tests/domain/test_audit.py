"""The hash chain finds an event edited, removed or moved (pure, no Redis)."""

from __future__ import annotations

import base64
import hashlib
import json

from bot.domain.audit import chain_hash, verify_chain


def chained(*texts: str) -> list[str]:
    raws, prev = [], None
    for i, text in enumerate(texts):
        raw = json.dumps({"id": f"ev_{i}", "prev": prev, "text": text})
        raws.append(raw)
        prev = chain_hash(raw)
    return raws


def test_an_untouched_chain_is_intact() -> None:
    assert verify_chain(chained("a", "b", "c")) == []


def test_an_edited_event_breaks_the_link_after_it() -> None:
    raws = chained("a", "b", "c")
    raws[1] = raws[1].replace('"b"', '"B"')
    (broken,) = verify_chain(raws)
    assert (broken.index, broken.event_id) == (2, "ev_2") and "edited" in broken.why


def test_a_removed_event_breaks_the_chain_where_it_was() -> None:
    raws = chained("a", "b", "c")
    del raws[1]
    assert [b.index for b in verify_chain(raws)] == [1]


def test_moved_events_break_the_chain() -> None:
    raws = chained("a", "b", "c", "d")
    raws[1], raws[2] = raws[2], raws[1]
    assert [b.index for b in verify_chain(raws)] == [1, 2, 3]


def test_a_removed_first_event_shows() -> None:
    (broken,) = verify_chain(chained("a", "b")[1:])
    assert broken.index == 0 and "first event" in broken.why


def test_the_hash_is_short_and_stable() -> None:
    assert chain_hash('{"a":1}') == chain_hash(b'{"a":1}') and len(chain_hash("x")) == 22


def test_the_hash_is_sha256s_first_128_bits_in_base64url() -> None:
    """Chains stored before must still verify: the hash never changes."""
    for raw in ('{"a":1}', '{"type":"user_message","text":"héllo ✓"}', "x" * 1000):
        digest = hashlib.sha256(raw.encode()).digest()[:16]
        assert chain_hash(raw) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
