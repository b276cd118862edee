"""Lua scripts with named keys and arguments, built from their owners' fragments.

A script declares the names of its keys and arguments; Lua reads them as
``K.log`` and ``A.expected`` instead of ``KEYS[1]`` and ``ARGV[3]``, and
Python passes them by name. A variable-length tail (events to append) follows
the named arguments and is read from ``ARGV[REST]`` on; keys beyond the named
ones (a thread's channel state, say) from ``KEYS[REST_KEYS]`` on.

A fragment is Lua that one storage module owns for its key family (the queue's
``enqueue``, the timers' ``arm``): a script that must touch that family in the
same round trip calls the owner's function instead of writing its commands.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.storage.connection import Client
from bot.storage.wire import Wire

_NAMED = re.compile(r"\b([KA])\.([A-Za-z_][A-Za-z0-9_]*)")


class Script:
    """A Lua script called with named keys and arguments.

    Args:
        body: the script's own Lua, using ``K.<key>``, ``A.<arg>`` and ``REST``.
        keys: the names of its keys, in any order.
        args: the names of its arguments.
        fragments: owners' Lua functions the body calls, prepended once each.
    """

    def __init__(
        self,
        body: str,
        *,
        keys: Sequence[str],
        args: Sequence[str] = (),
        fragments: Iterable[str] = (),
    ) -> None:
        self.keys = tuple(keys)
        self.args = tuple(args)
        # ``K.log`` is written ``KEYS[1]`` in the Lua sent, with no table built per call
        # (two tables of a few dozen names cost a few µs of Redis time on every call).
        at = {"K": {k: f"KEYS[{i}]" for i, k in enumerate(self.keys, 1)}}
        at["A"] = {a: f"ARGV[{i}]" for i, a in enumerate(self.args, 1)}

        def named(match: re.Match[str]) -> str:
            table, name = match.group(1), match.group(2)
            if name not in at[table]:
                raise ValueError(f"the script uses {table}.{name}, which it does not declare")
            return at[table][name]

        self.lua = "\n".join(
            [
                *dict.fromkeys(fragments),
                f"local REST = {len(self.args) + 1}",
                f"local REST_KEYS = {len(self.keys) + 1}",
                _NAMED.sub(named, body),
            ]
        )

    def bind(self, client: Client, batcher: Batcher | None = None) -> Bound:
        """This script on ``client``, ready to call; through ``batcher`` if given."""
        return Bound(self, client, batcher)


class Bound:
    """A script bound to a client, run by its SHA1 (loaded again if Redis forgot it)."""

    def __init__(self, script: Script, client: Client, batcher: Batcher | None) -> None:
        self.script = script
        self.sha = hashlib.sha1(script.lua.encode()).hexdigest()
        self._client = client
        self._batch = batcher
        self._wire = batcher.wire if batcher is not None else None
        self._keys = _picker(script.keys)
        self._args = _picker(script.args)
        self._named_keys = len(script.keys)

    async def __call__(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any] | None = None,
        rest: Sequence[Any] = (),
        extra_keys: Sequence[str] = (),
    ) -> Any:
        """Run with every declared key and argument, by name; ``extra_keys`` follow the
        named keys (``KEYS[REST_KEYS]`` on) and ``rest`` the named arguments."""
        ordered = [
            self._named_keys + len(extra_keys),
            *self._keys(keys),
            *extra_keys,
            *(self._args(args) if args else ()),
            *rest,
        ]
        if self._wire is not None:
            try:
                return await self._wire.send("EVALSHA", self.sha, *ordered)
            except NoScriptError:
                return await self._again_on(self._wire, ordered)
        if self._batch is not None:
            return await self._batch.run(self, ordered)
        return await self.call(self._client, ordered)

    async def call(self, client: Client, ordered: list[Any]) -> Any:
        """One EVALSHA of this script, loading it first if Redis forgot it."""
        try:
            return await client.evalsha(self.sha, *ordered)
        except NoScriptError:
            await client.script_load(self.script.lua)
            return await client.evalsha(self.sha, *ordered)

    async def _again_on(self, wire: Wire, ordered: list[Any]) -> Any:
        """A call Redis refused as it forgot the script (it restarted, or was flushed):
        loaded and run again in one write, so that the calls it refused run again in
        the order they were sent."""
        loaded = wire.send("SCRIPT", "LOAD", self.script.lua)
        again = wire.send("EVALSHA", self.sha, *ordered)
        try:
            await loaded
        except BaseException:
            again.cancel()  # its answer is dropped when it comes
            raise
        return await again


class Batcher:
    """Sends the script calls made in one turn of the event loop together.

    Calls from many coroutines (a worker stepping 32 threads, a web process
    answering many requests) travel together: one write and one read instead
    of one each. On one Redis, through a ``Wire`` (one connection, each turn's
    calls in one write or in writes of about 16 KiB, answers read in order).
    On a cluster, one write per node holding the calls' slots (every script
    touches one slot); a call the node redirects (the slot moved) or cannot
    answer (it is down) goes again through the cluster client, which follows
    the redirection and refreshes its map of the slots.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.wire = Wire.for_client(client) if isinstance(client, Redis) else None
        """On one Redis, the connection the calls share (``Bound`` sends on it)."""
        self._gathering: list[_Call] | None = None

    @staticmethod
    def for_client(client: Client) -> Batcher:
        return Batcher(client)

    async def run(self, script: Bound, ordered: list[Any]) -> Any:
        """Run one call on a cluster: the first of a turn gathers the others and sends
        them all."""
        assert isinstance(self.client, RedisCluster)
        loop = asyncio.get_running_loop()
        if self._gathering is not None:
            joined: asyncio.Future[Any] = loop.create_future()
            self._gathering.append((script, ordered, joined))
            return await joined
        mine: asyncio.Future[Any] = loop.create_future()
        batch = self._gathering = [(script, ordered, mine)]
        try:
            await asyncio.sleep(0)  # the other coroutines of this turn join meanwhile
        except asyncio.CancelledError:
            if len(batch) > 1:  # send the others' calls all the same
                self._send(self.client, batch[1:])
            raise
        finally:
            self._gathering = None
        if len(batch) == 1:  # alone: no pipeline, no task
            return await script.call(self.client, ordered)
        # Sent by a task of its own: cancelling this caller must not strand the others.
        self._send(self.client, batch)
        return await mine

    def _send(self, cluster: RedisCluster, batch: list[_Call]) -> None:
        sending = asyncio.get_running_loop().create_task(self._execute(cluster, batch))
        _IN_FLIGHT.add(sending)
        sending.add_done_callback(_IN_FLIGHT.discard)

    async def _execute(self, cluster: RedisCluster, batch: list[_Call]) -> None:
        try:
            answers = await self._per_node(cluster, batch)
            # Redis (or one node) restarted or was flushed: load what it forgot and run
            # again only the calls it refused; the others ran and must not run twice.
            missing = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError)]
            if missing:
                for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                    await cluster.script_load(script.script.lua)
                again = await self._per_node(cluster, [batch[i] for i in missing])
                for i, answer in zip(missing, again, strict=True):
                    answers[i] = answer
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _per_node(self, cluster: RedisCluster, batch: list[_Call]) -> list[Any]:
        """A cluster's batch: one exchange per node, then the client for what went astray."""
        by_node: dict[ClusterNode, list[int]] = {}
        answers: list[Any] = [None] * len(batch)
        keyless: list[int] = []  # no keys, so no slot: the cluster client picks a node
        for i, (_, ordered, _) in enumerate(batch):
            if not ordered[0]:
                keyless.append(i)
                continue
            node = cluster.get_node_from_key(ordered[1])  # the first key names the slot
            if node is None:  # not covered: the cluster client knows what to do
                raise SlotNotCoveredError(f"no node serves {ordered[1]!r}")
            by_node.setdefault(node, []).append(i)

        async def on(node: ClusterNode, calls: list[int]) -> None:
            try:
                conn = node.acquire_connection()
            except RedisError as exc:  # every connection of the node in use
                for i in calls:
                    answers[i] = exc
                return
            try:
                await node.disconnect_if_needed(conn)
                got = await _exchange(conn, [batch[i] for i in calls])
            except (RedisConnectionError, RedisTimeoutError) as exc:
                await conn.disconnect()
                got = [exc] * len(calls)
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            finally:
                node.release(conn)
            for i, answer in zip(calls, got, strict=True):
                answers[i] = answer

        await asyncio.gather(*(on(node, calls) for node, calls in by_node.items()))
        astray = [i for i, answer in enumerate(answers) if isinstance(answer, _ASTRAY)]
        for i in sorted([*keyless, *astray]):
            script, ordered, _ = batch[i]
            try:
                answers[i] = await script.call(cluster, ordered)
            except RedisError as exc:
                answers[i] = exc
        return answers


_ASTRAY = (AskError, TryAgainError, ClusterDownError, RedisConnectionError, RedisTimeoutError)
"""Answers of a node that did not run the call, or may not have: the cluster client
tries again (redirected, retried), as it would have had the call gone through it.
``MovedError`` is an ``AskError``."""


async def _exchange(conn: AbstractConnection, batch: list[_Call]) -> list[Any]:
    await conn.send_packed_command(
        conn.pack_commands([("EVALSHA", script.sha, *ordered) for script, ordered, _ in batch])
    )
    answers: list[Any] = []
    for _ in batch:
        try:
            answers.append(await conn.read_response())
        except ResponseError as exc:  # this call's error; the others' answers follow
            answers.append(exc)
    return answers


def _picker(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """What reads ``names`` from a mapping, in order, as one call into C (``itemgetter``
    gives the value itself for a single name, and needs at least one)."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda mapping: [mapping[name] for name in names]


_Call = tuple[Bound, list[Any], "asyncio.Future[Any]"]
"""A script, its keys and arguments in order, and where its answer goes."""

_IN_FLIGHT: set[asyncio.Task[None]] = set()
"""Pipelines on their way: held so the event loop does not drop them."""
