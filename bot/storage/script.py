"""Lua scripts with named keys and arguments, built from their owners' fragments.

A script declares the names of its keys and arguments; Lua reads them as
``K.log`` and ``A.expected`` instead of ``KEYS[1]`` and ``ARGV[3]``, and
Python passes them by name. A variable-length tail (events to append) follows
the named arguments and is read from ``ARGV[REST]`` on.

A fragment is Lua that one storage module owns for its key family (the queue's
``enqueue``, the timers' ``arm``): a script that must touch that family in the
same round trip calls the owner's function instead of writing its commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

Client = Redis | RedisCluster


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
        named_keys = ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(self.keys, 1))
        named_args = ", ".join(f"{a} = ARGV[{i}]" for i, a in enumerate(self.args, 1))
        self.lua = "\n".join(
            [
                *dict.fromkeys(fragments),
                f"local K = {{{named_keys}}}",
                f"local A = {{{named_args}}}",
                f"local REST = {len(self.args) + 1}",
                body,
            ]
        )

    def bind(self, client: Client) -> Bound:
        """This script on ``client``, ready to call."""
        return Bound(self, client)


class Bound:
    """A script bound to a client: loaded by hash on first use, reloaded if Redis forgot it."""

    def __init__(self, script: Script, client: Client) -> None:
        self.script = script
        self._call: Any = client.register_script(script.lua)

    async def __call__(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any] | None = None,
        rest: Sequence[Any] = (),
    ) -> Any:
        """Run with every declared key and argument, by name."""
        values = args or {}
        ordered_keys = [keys[k] for k in self.script.keys]
        ordered_args = [*(values[a] for a in self.script.args), *rest]
        return await self._call(keys=ordered_keys, args=ordered_args)
