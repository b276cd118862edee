"""Identifiers of threads and requests: what they look like and how they are made."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading

THREAD_ID = re.compile(r"^th_[0-9a-f]{20}$")
REQUEST_ID = re.compile(r"^(th_[0-9a-f]{20})\.r[0-9a-f]{8}$")


_POOL = 4096
_random = bytearray()
_lock = threading.Lock()


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG, read 4 KB at a time: a cycle makes
    about twenty ids, each a system call otherwise. The buffer is emptied in a forked
    child, so no two processes share it."""
    with _lock:
        if len(_random) < n:
            _random[:] = os.urandom(_POOL)
        taken = bytes(_random[-n:])
        del _random[-n:]
    return taken


def random_hex(n: int) -> str:
    """``random_bytes`` as hex (what ``secrets.token_hex`` gives)."""
    return random_bytes(n).hex()


_TOKEN = 14
_tokens: list[str] = []


def random_token() -> str:
    """14 base64url characters (84 random bits) from the CSPRNG: the random part of an
    event's or a call's id. Cut from one base64 text of 4 KB, so that an id costs a list
    pop (a cycle makes about ten; ``list.pop`` is atomic, so only a refill takes the
    lock); emptied in a forked child, as the buffer is."""
    try:
        return _tokens.pop()
    except IndexError:
        with _lock:
            if not _tokens:
                text = base64.urlsafe_b64encode(os.urandom(_POOL - _POOL % 3)).decode()  # no "="
                _tokens[:] = [
                    text[i : i + _TOKEN] for i in range(0, len(text) - _TOKEN + 1, _TOKEN)
                ]
        return random_token()


os.register_at_fork(after_in_child=_random.clear)
os.register_at_fork(after_in_child=_tokens.clear)


def new_thread_id() -> str:
    return "th_" + random_hex(10)


def thread_id_for(channel: str, conversation: str) -> str:
    """The thread of an external conversation: derived, so two first messages agree."""
    digest = hashlib.sha256(f"{channel}\x00{conversation}".encode()).hexdigest()
    return "th_" + digest[:20]


def new_request_id(thread_id: str) -> str:
    """A request id names its thread, so a decision needs no index lookup."""
    return f"{thread_id}.r{random_hex(4)}"


def thread_of_request(request_id: str) -> str | None:
    match = REQUEST_ID.match(request_id)
    return match.group(1) if match else None


def is_thread_id(value: str) -> bool:
    return bool(THREAD_ID.match(value))
