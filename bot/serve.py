"""Process entry points: build everything from settings, then serve web, worker or both."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from redis.exceptions import RedisError

from bot.domain.agents import Agent, load_agents
from bot.domain.clock import SystemClock
from bot.domain.errors import ConfigError
from bot.domain.model import Model
from bot.domain.policy import ApprovalPolicy, Groups, check_policies, check_policy
from bot.models.offline import OfflineModel
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.storage.archive import Archive
from bot.storage.connection import Client, StorageFailure, connect
from bot.storage.embedded import EmbeddedRedis
from bot.telemetry import setup_tracing
from bot.web.app import create_app
from bot.web.signin import SignInConfig
from bot.web.telemetry import create_metrics_app

log = logging.getLogger(__name__)

OFFLINE_BANNER = """
************************************************************************
*  No ANTHROPIC_API_KEY: running the OFFLINE model. Agents follow      *
*  scripted turns, not Claude. Set ANTHROPIC_API_KEY for real agents.  *
************************************************************************"""


def make_model(settings: Settings, agents: dict[str, Agent]) -> Model:
    """Claude when a key is set; otherwise the offline model, announced loudly."""
    if settings.anthropic_api_key is None:
        log.warning(OFFLINE_BANNER)
        return OfflineModel(agents)
    from bot.models.anthropic import AnthropicModel

    return AnthropicModel(
        api_key=settings.anthropic_api_key.get_secret_value(),
        model=settings.model,
        base_url=settings.anthropic_base_url,
        timeout=settings.model_timeout,
        max_retries=settings.model_max_retries,
    )


def groups_from(settings: Settings) -> Groups:
    """The approver groups, and who decides for a group allowed to be empty."""
    return Groups(
        {k: tuple(v) for k, v in settings.approver_groups.items()},
        allow_empty=frozenset(settings.approver_groups_allow_empty),
        admins=tuple(settings.admins),
    )


def policies_from(settings: Settings, groups: Groups) -> dict[str, ApprovalPolicy]:
    """The APPROVAL_POLICIES agents elsewhere name, each checked like an agent's own.

    Raises:
        ConfigError: a policy's approvers resolve to nobody (fail closed).
    """
    policies = {n: p.to_policy() for n, p in settings.approval_policies.items()}
    for name, policy in policies.items():
        check_policy(policy, groups, f"APPROVAL_POLICIES {name!r}")
    return policies


def api_token(settings: Settings) -> str:
    """The configured token, or one generated and kept in the data folder for the CLI."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    path = token_file(settings.data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
        log.warning("no API_TOKEN set: generated one in %s", path)
    return path.read_text().strip()


def token_file(data_dir: Path) -> Path:
    return data_dir / "api_token"


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, *, inbound: bool = True) -> AsyncIterator[Runtime]:
    """Connect Redis (embedded when REDIS_URL is unset), wire agents, model, channels."""
    agents = load_agents(settings.agent_modules)
    groups = groups_from(settings)
    check_policies(agents, groups)  # before anything starts: a refused start leaves nothing
    policies = policies_from(settings, groups)
    embedded = None
    url = settings.redis_url
    if url is None:
        # Every write on disk before it is acknowledged: an approved tool's start survives a
        # crash of the machine (README: Redis durability), for about a tenth of the cycles a
        # second with 32 in flight here (bench.cycles --appendfsync always).
        embedded = EmbeddedRedis(settings.data_dir / "redis", appendfsync="always")
        embedded.start()  # from the main thread: see die_with_parent
        url = embedded.url
    redis = await _reach(url, settings.redis_wait)
    await _warn_about_durability(redis, agents)
    from channels import build_channels

    rt = build_runtime(
        redis,
        agents,
        make_model(settings, agents),
        channels=lambda ports: build_channels(settings, ports),
        clock=SystemClock(),
        groups=groups,
        policies=policies,
        delivery_base_delay=settings.delivery_base_delay,
        delivery_give_up_after=settings.delivery_give_up_after,
        archive=Archive(settings.archive_dir or settings.data_dir / "archive"),
        retain_for=settings.retain_finished_days * 86400,
        default_agent=settings.default_agent,
        cache_events=settings.thread_cache_events,
    )
    try:
        for channel in rt.channels:
            await channel.start(inbound=inbound)
        yield rt
    finally:
        for channel in rt.channels:
            await channel.stop()
        await redis.aclose()
        if embedded:
            embedded.stop()


GC_YOUNG = 10_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def tune_gc() -> None:
    """Collect the youngest generation every 10,000 allocations instead of 700.

    A step allocates hundreds of short-lived objects (events, states, futures),
    so with Python's default the collector ran every few steps and, every few
    hundred cycles, walked every object of the process, the thread cache
    included: about 0.3 ms of CPU per cycle, a fifth of a worker's
    (``bench.cycles``). Reference cycles are still found, a little later; what
    start-up built is frozen out of the collector's way by ``_serve``.
    """
    gc.set_threshold(GC_YOUNG, 10, 10)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed, else on asyncio's own loop,
    with the collector set for a server (``tune_gc``)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def _reach(url: str, patience: float) -> Client:
    """Connect, waiting up to ``patience`` seconds for a Redis that is not up yet
    (a process started before it, or while it restarts).

    Raises:
        ConfigError: the URL does not parse, or Redis did not answer in time.
    """
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return await _answering(url)
        except ValueError as exc:  # redis-py's word on the URL, which it does not repeat
            raise ConfigError(f"REDIS_URL is not a Redis URL: {exc}") from exc
        except StorageFailure as exc:
            if time.monotonic() + delay > deadline:
                raise ConfigError(f"Redis did not answer within {patience:.0f} s: {exc}") from exc
            log.warning("waiting for Redis: %s", exc)
            await asyncio.sleep(delay)  # paces the retries; nothing to synchronise with
            delay = min(delay * 2, 5.0)


async def _answering(url: str) -> Client:
    """A client that Redis has answered: with ``?cluster=`` in the URL, ``connect`` asks
    the server nothing, and a Redis not up yet would fail the first command instead."""
    redis = await connect(url)
    try:
        await redis.ping()
    except StorageFailure:
        await redis.aclose()
        raise
    return redis


async def _warn_about_durability(redis: Client, agents: Mapping[str, Agent]) -> None:
    """Say what Redis would lose: everything on a restart without the AOF; on a crash of
    its machine, the last second of writes unless it fsyncs each one (README: Redis
    durability), which matters for the starts of approved tools that are not idempotent."""
    try:
        config = {**await redis.config_get("appendonly"), **await redis.config_get("appendfsync")}
    except RedisError:
        return  # managed Redis often refuses CONFIG; nothing to learn
    if config.get("appendonly") != "yes":
        log.warning("Redis has appendonly=no: suspended threads would be lost if Redis restarts")
        return
    fsync = config.get("appendfsync")
    at_risk = [
        f"{agent.name}.{tool.name}"
        for agent in agents.values()
        for tool in agent.all_tools.values()
        if tool.approval.required is not False and not tool.idempotent
    ]
    if fsync != "always" and at_risk:
        log.warning(
            "Redis has appendfsync=%s: a crash of its machine loses the writes not yet on its "
            "disk (the last second or so under everysec). An approved tool that is not "
            "idempotent, started then, runs again with nothing saying it began. For %s: set "
            "appendfsync always in Redis, or declare the tool idempotent",
            fsync,
            ", ".join(sorted(at_risk)),
        )


async def serve(settings: Settings, *, web: bool, worker: bool) -> None:
    """Serve until SIGINT/SIGTERM; steps in hand are finished first."""
    process = "both" if web and worker else "web" if web else "worker"
    provider = setup_tracing(settings, process)
    try:
        await _serve(settings, web=web, worker=worker)
    finally:
        if provider is not None:
            provider.shutdown()  # exports the spans still buffered


async def _serve(settings: Settings, *, web: bool, worker: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, inbound=web) as rt:
        # Everything built so far lives as long as the process: keep the collector off it.
        gc.freeze()
        tasks = []
        metrics_server = None
        if settings.metrics_port is not None:
            # A worker has no HTTP server of its own: this is how Prometheus reaches it.
            metrics_app = create_metrics_app(rt, api_token=api_token(settings))
            metrics_server = uvicorn.Server(
                uvicorn.Config(
                    metrics_app,
                    host=settings.host,
                    port=settings.metrics_port,
                    log_config=None,
                    lifespan="off",
                    access_log=False,
                )
            )
            # The process's signals stop it (below), not uvicorn's own handlers.
            metrics_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
            tasks.append(asyncio.create_task(metrics_server.serve()))
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        if worker:
            w = rt.worker(
                concurrency=settings.worker_concurrency,
                lease_ms=settings.lease_ms,
                claim_idle_ms=settings.claim_idle_ms,
                step_attempts=settings.step_attempts,
            )
            tasks.append(asyncio.create_task(w.run(stop)))
        if web:
            app = create_app(
                rt,
                api_token=api_token(settings),
                max_body_bytes=settings.max_body_bytes,
                refuse_private_callbacks=settings.callback_url_refuse_private,
                sign_callbacks=settings.webhook_secret is not None,
                mcp_wait=settings.mcp_wait,
                signin=SignInConfig.from_settings(settings),
            )
            # No access log: paths can carry secrets (an email decision link's token).
            # Requests are traced and counted by route template instead (bot/web/telemetry.py).
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                http="httptools",  # C parser: h11 (pure Python) costs more CPU per request
                log_config=None,
                lifespan="off",
                access_log=False,
            )
            server = uvicorn.Server(config)
            web_task = asyncio.create_task(server.serve())
            tasks.append(web_task)
            log.info("web on http://%s:%d (docs at /docs)", settings.host, settings.port)
        # uvicorn takes the signals while it serves. Whichever ends first (the web server on
        # a signal, a worker that failed) stops the others: no process stays up half dead.
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        stop.set()
        if web:
            server.should_exit = True
        if metrics_server is not None:
            metrics_server.should_exit = True
        await asyncio.gather(*tasks)
