"""Generated MIME messages: the parser refuses with a named error or reads them, and
``POST /email/inbound`` never answers a 5xx; a refusal changes nothing in Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.clock import ManualClock
from bot.domain.errors import InvalidInputError
from bot.storage.embedded import EmbeddedRedis
from channels.email.mime import from_bytes
from tests.channels.email.helpers import ANN, email_settings
from tests.channels.email.provider import MailProvider
from tests.fuzz import examples
from tests.fuzz.test_signed import check
from tests.harness import Harness
from tests.scenarios.test_rest import snapshot

TYPES = ["text/plain", "text/html", "application/octet-stream", "message/rfc822", "text/x-odd"]
CHARSETS = ["utf-8", "iso-8859-1", "x-unknown", "utf-16", ""]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-garbage", ""]
words = st.text(max_size=30) | st.binary(max_size=30).map(lambda b: b.decode("latin-1"))


@st.composite
def parts(draw: st.DrawFn, depth: int = 0) -> bytes:
    """One MIME part, perhaps multipart, as bytes (boundaries unique by depth and position)."""
    if depth < 20 and draw(st.integers(0, 3)) == 0:
        boundary = f"b{depth}x{draw(st.integers(0, 999))}"
        children = draw(st.lists(st.deferred(lambda: parts(depth + 1)), max_size=3))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + c + b"\r\n" for c in children)
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report"]))
        head = f"Content-Type: multipart/{subtype}; boundary={boundary}\r\n\r\n".encode()
        return head + body + f"--{boundary}--\r\n".encode()
    kind = draw(st.sampled_from(TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    head = f"Content-Type: {kind}" + (f"; charset={charset}" if charset else "") + "\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    text = draw(words).encode("utf-8", "surrogatepass")
    return (head + "\r\n").encode() + draw(st.just(text) | st.binary(max_size=80))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = {
        "From": draw(st.just(ANN) | words),
        "To": draw(st.just("deploy@example.test") | words),
        "Subject": draw(words),
        "Message-ID": draw(st.just("<m1@example.test>") | words),
        "In-Reply-To": draw(words),
        "Authentication-Results": draw(words),
    }
    chosen = {k: v for k, v in headers.items() if draw(st.booleans()) or k in ("From", "To")}
    head = "".join(f"{k}: {v}\r\n" for k, v in chosen.items() if "\n" not in v and "\r" not in v)
    raw = head.encode("utf-8", "surrogatepass") + b"MIME-Version: 1.0\r\n" + draw(parts())
    return draw(st.just(raw) | st.binary(max_size=200))


@examples(400)
@given(raw=messages())
def test_the_parser_reads_or_refuses_with_a_named_error(raw: bytes) -> None:
    try:
        mail = from_bytes(raw)
    except InvalidInputError:
        return
    # What it read can be stored: plain strings, no lone surrogates.
    for text in (mail.text, mail.subject, mail.sender, mail.message_id):
        text.encode("utf-8")


@pytest.fixture(scope="module")
async def room(redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    async with (
        MailProvider() as provider,
        Harness(
            redis_server.url, settings=email_settings(provider), clock=ManualClock(time.time())
        ) as h,
    ):
        await h.redis.flushall()
        yield h


@examples(100)
@given(raw=messages())
async def test_inbound_mime_over_http(room: Harness, raw: bytes) -> None:
    headers = {"content-type": "message/rfc822", "x-greenlight-inbound-secret": INBOUND}
    before: Any = await snapshot(room.redis)
    r = await room.http.post("/email/inbound", content=raw, headers=headers)
    await check(room, "mime", before, r)


INBOUND = "test-inbound-secret"
