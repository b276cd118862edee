"""How errors reach HTTP clients: one status table, and Redis outages as a JSON 503."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.domain import errors
from bot.storage import keys
from bot.storage.connection import connect
from bot.storage.embedded import EmbeddedRedis, free_port
from bot.web.errors import status_of
from tests.harness import Harness

DEPLOY = {"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of the test's own, to stop, fill or turn into a replica: the
    session's server stays up for the other tests. Stopped when the test ends."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_refusal_is_a_4xx_and_anything_else_a_500() -> None:
    refusals = {
        errors.UnauthorizedError: 401,
        errors.ForbiddenError: 403,
        errors.NotFoundError: 404,
        errors.ConflictError: 409,
        errors.InvalidInputError: 422,
    }
    for cls, status in refusals.items():
        assert issubclass(cls, errors.RefusedError)
        assert status_of(cls("refused")) == status
    assert status_of(errors.VersionConflict("th_1", 1, 2)) == 409
    for failure in (errors.StoreError, errors.ModelError, errors.DeliveryError, errors.ConfigError):
        assert not issubclass(failure, errors.RefusedError)
        assert status_of(failure("failed")) == 500


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
async def test_redis_unreachable_is_a_json_503_with_retry_after(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture, kill: bool
) -> None:
    async with Harness(server.url) as h:
        assert (await h.api.get("/threads")).status_code == 200
        server.stop(kill=kill)
        caplog.clear()

        with caplog.at_level(logging.DEBUG):
            listed = await h.api.get("/threads")
            created = await h.api.post("/threads", json=DEPLOY)

        for r in (listed, created):
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.headers["retry-after"].isdigit()
            body = r.json()
            assert body["error"] == "unavailable" and "Redis" in body["detail"], body
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 2, [r.getMessage() for r in errors]  # one line a request
        for record, path in zip(errors, ("GET /threads", "POST /threads"), strict=True):
            assert record.exc_info is None and "\n" not in record.getMessage()
            assert path in record.getMessage()


async def test_redis_turned_read_only_by_a_failover_is_a_json_503_with_retry_after(
    server: EmbeddedRedis,
) -> None:
    async with Harness(server.url) as h:
        approval = {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}}
        # Mid-failover: the server the web process talks to is now a replica, of a
        # master it cannot reach yet (nothing listens on its port).
        primary = await connect(server.url)
        await primary.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            for r in [
                await h.api.post("/approvals", json=approval),
                await h.api.post("/threads", json=DEPLOY),
            ]:
                assert r.status_code == 503, r.text
                assert r.headers["content-type"] == "application/json"
                assert r.headers["retry-after"].isdigit()
                assert r.json()["error"] == "unavailable", r.text
        finally:
            await primary.execute_command("REPLICAOF", "NO", "ONE")
            await primary.aclose()
        assert (await h.api.post("/approvals", json=approval)).status_code == 201


async def test_redis_out_of_memory_is_a_json_503_and_one_error_line(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Harness(server.url) as h:
        admin = await connect(server.url)
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")
        caplog.clear()
        approval = {"tool": "deploy", "summary": "ship", "policy": {"approvers": ["bob"]}}
        key = {"Idempotency-Key": "ship-1"}
        try:
            with caplog.at_level(logging.DEBUG):
                r = await h.api.post("/approvals", json=approval, headers=key)
        finally:
            await admin.config_set("maxmemory", "0")
            await admin.aclose()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["retry-after"].isdigit()
        assert r.json() == {
            "error": "unavailable",
            "detail": "Redis is out of memory; try again later",
        }
        (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert line.levelno == logging.ERROR and "POST /approvals" in line.getMessage()
        assert (await h.api.post("/approvals", json=approval, headers=key)).status_code == 201


async def test_anything_unexpected_is_a_json_500_logged_once_with_its_traceback(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with Harness(server.url) as h:
        # A key of ours that someone overwrote with another type: Redis refuses to
        # read it as ours (WRONGTYPE), which nothing here expects.
        admin = await connect(server.url)
        await admin.set(keys.agents(0), "not a sorted set")
        await admin.aclose()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            r = await h.api.get("/threads")
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "internal_error", r.text
        assert "WRONGTYPE" not in r.text  # what failed is for the log, not the caller
        (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "GET /threads failed" in line.getMessage() and line.exc_info is not None
        assert (await h.api.get("/healthz")).status_code == 200
