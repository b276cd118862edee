"""One connection to one Redis that every coroutine of a process shares, in turn.

Commands are written in the order they are sent and Redis answers them in that
order, so each answer goes to the next caller waiting: no connection is taken
from a pool and given back per call, and the commands sent in one turn of the
event loop leave together: in one write, or, when the turn makes more, in
writes of about 16 KiB as they are built (``_WRITE_AT``). Calls sent in order
on a ``Wire`` reach Redis, and run, in that order (the thread log relies on it:
a take, then an append).

redis-py connects it (TLS, unix socket, AUTH, SELECT, the client name: whatever
the URL says) with a connection taken from the client's pool and kept; the
bytes then come here instead of to redis-py's reader. Closing the client
(``aclose``) closes it too.

A dropped connection fails every call in flight with a ``ConnectionError``: it
may or may not have run, as with any lost answer (the thread log's version
check and delivery keys make a write sent again safe). Calls not yet written
wait for the next connection, which the first of them opens.

A blocking command holds up every call behind it: it needs a wire of its own
(a worker's queue reads have one). Answers are in the protocol the client's
connections speak (RESP3 unless the URL says ``protocol=2``), as Redis sends
them: redis-py's parsing of replies into other shapes is not applied. Messages
Redis pushes unasked (RESP3) are no answer, and are skipped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, RedisError

_MORE = object()
"""What the reader says while an answer is not complete."""

_WRITE_AT = 16 * 1024
"""Bytes of commands after which they leave at once, before the turn ends: Redis starts on
them while this process builds the rest, instead of idling until the whole turn's commands
arrive (about what it reads from a connection at a time anyway). With 32 cycles in
flight, the process went from about 85 % to 98 % busy, for 13 % more cycles a second (the
median of 8 alternating pairs of runs) at up to 9 % more CPU per cycle. 8 and 32 KiB did
no better; writing each command at once cost 15-25 % more CPU per cycle."""


class Wire:
    """Commands to one Redis over one shared connection, answered in order.

    Args:
        pool: the client's pool, for a connection to keep and for its settings.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._conn: AbstractConnection | None = None
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[bytes] = []
        self._unsent_answers: list[asyncio.Future[Any]] = []
        self._unsent_bytes = 0
        self._flush_due = False

    @staticmethod
    def for_client(client: Redis) -> Wire:
        """A wire of its own to ``client``'s Redis, connected when first used."""
        return Wire(client.connection_pool)

    def send(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command (words and arguments: str, bytes, int or float); its answer,
        or the error Redis answered, comes in the future returned."""
        try:
            packed = hiredis.pack_command(args)
        except TypeError as exc:
            raise DataError(str(exc)) from exc
        # The connection's loop, once connected: on Python 3.11 ``get_running_loop`` asks the
        # OS for the process id on every call (a system call; several per step otherwise).
        loop = self._link.loop if self._link is not None else asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._unsent.append(packed)
        self._unsent_answers.append(answer)
        self._unsent_bytes += len(packed)
        link = self._link
        if self._unsent_bytes >= _WRITE_AT and link is not None and not link.is_closing():
            self._write(link)  # what follows in this turn goes in the next write
        elif not self._flush_due:  # the other calls of this turn join this write
            self._flush_due = True
            loop.call_soon(self._flush)
        return answer

    def _flush(self) -> None:
        self._flush_due = False
        if not self._unsent:  # written already: early, or by a connection just made
            return
        link = self._link
        if link is None or link.is_closing():
            self._link = None
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # written once connected
        self._write(link)

    def _write(self, link: _Link) -> None:
        unsent, answers = self._unsent, self._unsent_answers
        self._unsent, self._unsent_answers, self._unsent_bytes = [], [], 0
        link.write(unsent, answers)

    async def _connect(self) -> None:
        try:
            if self._conn is None:
                self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            else:
                await self._conn.disconnect(nowait=True)
                await self._conn.connect()  # type: ignore[no-untyped-call]
            self._link = _Link(self._conn)
        except BaseException as exc:
            answers = self._unsent_answers
            self._unsent, self._unsent_answers, self._unsent_bytes = [], [], 0
            for answer in answers:
                if not answer.done():
                    answer.set_exception(_as_connection_error(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._connecting = None
        if self._unsent:
            self._flush()


class _Link(asyncio.Protocol):
    """One connection's bytes: commands out, answers in, matched in order."""

    def __init__(self, conn: AbstractConnection) -> None:
        self.loop = asyncio.get_running_loop()
        """The loop it was connected on, which its answers wake."""
        writer = conn._writer  # redis-py's, connected and past the handshake
        assert writer is not None
        self._transport = writer.transport
        # Told when the connection ends, so that redis-py can close its side cleanly.
        self._streams: asyncio.BaseProtocol = self._transport.get_protocol()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        encoder = conn.encoder
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=conn._parser.parse_error,  # NOSCRIPT is a NoScriptError, and so on
            notEnoughData=_MORE,
            encoding=encoder.encoding if encoder.decode_responses else None,
            errors=encoder.encoding_errors,
        )
        self._transport.set_protocol(self)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def write(self, commands: list[bytes], answers: list[asyncio.Future[Any]]) -> None:
        self._waiting.extend(answers)
        self._transport.write(b"".join(commands))

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        try:
            reader.feed(data)
            while (answer := reader.gets()) is not _MORE:
                if isinstance(answer, hiredis.PushNotification):
                    continue
                future = waiting.popleft()
                if future.done():  # its caller gave up waiting
                    continue
                if isinstance(answer, Exception):  # an error Redis answered
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        except (InvalidResponse, IndexError) as exc:  # garbled, or an answer nobody asked for
            self._transport.abort()
            self._fail(RedisConnectionError(f"Redis answered out of turn: {exc!r}"))

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_as_connection_error(exc))
        self._streams.connection_lost(exc)

    def _fail(self, error: Exception) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(*error.args))


def _as_connection_error(exc: BaseException | None) -> Exception:
    """What the calls of a connection that failed or ended raise: a Redis error."""
    if isinstance(exc, RedisError):
        return exc
    if exc is None:
        return RedisConnectionError("Connection closed by Redis.")
    error = RedisConnectionError(f"Connection to Redis lost: {exc!r}")
    error.__cause__ = exc
    return error
