"""Reply tokens are pure: mint, verify, bind to one person, expire."""

from __future__ import annotations

import re

import pytest

from channels.email import tokens

SECRET = b"a-secret-of-some-length"
REQUEST = "th_0123456789abcdef0123.r89abcdef"
LATER = 2_000_000_000.0


def test_a_token_round_trips_and_is_short_lowercase_base32() -> None:
    token = tokens.mint(REQUEST, "Ops@Example.test", LATER, SECRET)
    assert re.fullmatch(r"[a-z2-7]{48}", token)
    assert len(tokens.to_reply_address(token, "example.test").partition("@")[0]) <= 64
    claim = tokens.verify(token, SECRET)
    assert claim is not None
    assert (claim.request_id, claim.expires_at) == (REQUEST, int(LATER))
    assert tokens.mint(REQUEST, "ops@example.test", LATER, SECRET) == token  # deterministic


def test_a_token_is_bound_to_its_recipient() -> None:
    claim = tokens.verify(tokens.mint(REQUEST, "ops@example.test", LATER, SECRET), SECRET)
    assert claim is not None
    assert claim.is_for(" OPS@example.test ", SECRET)
    assert not claim.is_for("intern@example.test", SECRET)
    assert not claim.is_for("ops@example.test", b"another-secret")


def test_expiry() -> None:
    claim = tokens.verify(tokens.mint(REQUEST, "ops@example.test", 1000.0, SECRET), SECRET)
    assert claim is not None
    assert not claim.is_expired(999.0) and claim.is_expired(1000.0)


def test_every_altered_character_is_caught() -> None:
    token = tokens.mint(REQUEST, "ops@example.test", LATER, SECRET)
    for i, ch in enumerate(token):
        other = "b" if ch != "b" else "c"
        assert tokens.verify(token[:i] + other + token[i + 1 :], SECRET) is None, i


@pytest.mark.parametrize("bad", ["", "a" * 48, "a" * 47, "!" * 48, "0" * 48, "a" * 56])
def test_garbage_never_verifies(bad: str) -> None:
    assert tokens.verify(bad, SECRET) is None


def test_another_key_does_not_verify() -> None:
    token = tokens.mint(REQUEST, "ops@example.test", LATER, SECRET)
    assert tokens.verify(token, b"another-secret") is None


def test_reply_addresses() -> None:
    assert tokens.token_of("<Reply+ABC@Example.test>", "example.test") == "abc"
    assert tokens.token_of("reply+abc@elsewhere.test", "example.test") is None
    assert tokens.token_of("deploy@example.test", "example.test") is None
    with pytest.raises(ValueError, match="not a request id"):
        tokens.mint("th_nope", "ops@example.test", LATER, SECRET)


def test_reply_and_link_tokens_do_not_stand_in_for_each_other() -> None:
    reply = tokens.mint(REQUEST, "ops@example.test", LATER, SECRET)
    link = tokens.mint(REQUEST, "ops@example.test", LATER, SECRET, purpose="link")
    assert reply != link
    assert tokens.verify(link, SECRET, purpose="link") is not None
    assert tokens.verify(link, SECRET) is None
    assert tokens.verify(reply, SECRET, purpose="link") is None
