"""A whole Greenlight on loopback: real Redis, the real app on a real port, a worker.

    async with Harness(redis_server.url, settings=test_settings()) as h:
        r = await h.api.post("/threads", json={...})
        await h.drain()                       # run the worker until the queue is empty
        await h.wait_for(lambda: ...)         # or poll with a timeout

Pass ``clock=ManualClock(...)`` to hold time still: the web, the worker and the
channels all read it, and moving it then draining makes due timers fire.

Channels come from ``channels.build_channels`` with the given settings, exactly
as in production; pass ``model`` or ``agents`` to replace the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import uvicorn

from bot.domain.agents import Agent, load_agents
from bot.domain.clock import Clock, SystemClock
from bot.domain.model import Model
from bot.domain.reducer import ThreadState
from bot.engine.ports import Channel
from bot.engine.worker import Worker
from bot.models.offline import OfflineModel
from bot.runtime import Runtime, build_runtime
from bot.serve import groups_from, policies_from
from bot.settings import Settings
from bot.storage.archive import Archive
from bot.storage.connection import connect
from bot.web.app import create_app
from bot.web.signin import SignInConfig

T = TypeVar("T")
TOKEN = "test-token"
# The bundled agents' groups, as the README's demo names them.
DEMO_GROUPS = {"deployers": ["bob"], "finance": ["bob"]}


WEBHOOK_SECRET = "whsec-test-secret"
"""The tests' ``WEBHOOK_SECRET``: callbacks are signed, as a ``callback_url`` needs."""


def test_settings(**overrides: Any) -> Settings:
    """Settings built explicitly: nothing read from the environment or a .env file."""
    values: dict[str, Any] = {
        "api_token": TOKEN,
        "delivery_base_delay": 0.05,
        "approver_groups": DEMO_GROUPS,
        "webhook_secret": WEBHOOK_SECRET,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Harness:
    """The app served by uvicorn on 127.0.0.1 plus a worker, against a real Redis."""

    def __init__(
        self,
        redis_url: str,
        *,
        settings: Settings | None = None,
        agents: dict[str, Agent] | None = None,
        model: Model | None = None,
        channels: list[Channel] | None = None,
        clock: Clock | None = None,
        archive: Archive | None = None,
        background_worker: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.settings = settings or test_settings()
        self.agents = agents if agents is not None else load_agents()
        self.model = model or OfflineModel(self.agents)
        self.extra_channels = channels or []
        self.clock = SystemClock() if clock is None else clock
        self.archive = archive
        self.background_worker = background_worker
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Harness:
        self.redis = await connect(self.redis_url)
        self._stack.push_async_callback(self.redis.aclose)
        s = self.settings
        from channels import build_channels

        self.rt: Runtime = build_runtime(
            self.redis,
            self.agents,
            self.model,
            channels=lambda ports: [*build_channels(s, ports), *self.extra_channels],
            clock=self.clock,
            groups=groups_from(s),
            policies=policies_from(s, groups_from(s)),
            delivery_base_delay=s.delivery_base_delay,
            delivery_give_up_after=s.delivery_give_up_after,
            archive=self.archive,
            retain_for=s.retain_finished_days * 86400 if self.archive else None,
            default_agent=s.default_agent,
        )
        for channel in self.rt.channels:
            await channel.start(inbound=True)
            self._stack.push_async_callback(channel.stop)
        self.app = create_app(
            self.rt,
            api_token=s.api_token.get_secret_value() if s.api_token else None,
            max_body_bytes=s.max_body_bytes,
            refuse_private_callbacks=s.callback_url_refuse_private,
            sign_callbacks=s.webhook_secret is not None,
            mcp_wait=s.mcp_wait,
            signin=SignInConfig.from_settings(s),
        )
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_config=None, lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        serving = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.005)
        self._stack.push_async_callback(self._stop_server, serving)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10)
        self.api = httpx.AsyncClient(
            base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        self._stack.push_async_callback(self.http.aclose)
        self._stack.push_async_callback(self.api.aclose)
        self.worker: Worker = self.rt.worker(block_ms=50, lease_ms=2000, claim_idle_ms=500)
        if self.background_worker:
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(stop))

            async def halt() -> None:
                stop.set()
                await task

            self._stack.push_async_callback(halt)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _stop_server(self, serving: asyncio.Task[None]) -> None:
        self.server.should_exit = True
        await serving

    async def drain(self) -> int:
        """Run a burst worker until nothing is queued or due."""
        return await self.rt.worker(name="burst").burst()

    async def thread(self, thread_id: str) -> ThreadState:
        return await self.rt.log.load(thread_id)

    async def wait_for(
        self,
        probe: Callable[[], Awaitable[T | None]],
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the poll, not for the probe
    ) -> T:
        """Poll ``probe`` until it returns something truthy, or fail after ``timeout``."""
        return await eventually(probe, timeout)


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the poll, not for the probe
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout``."""

    async def poll() -> T:
        while True:
            got = await probe()
            if got:
                return got
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)
