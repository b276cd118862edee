"""The engine on a real three-primary Redis Cluster: same code, same keys as on one Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bot.domain.clock import ManualClock
from bot.domain.events import ApprovalDecision
from bot.domain.reducer import Status
from bot.storage import keys
from bot.storage.archive import Archive
from bot.storage.channelstate import ChannelState
from bot.storage.connection import Client
from bot.storage.embedded_cluster import EmbeddedCluster
from bot.storage.retries import Retries
from tests.bot.test_crashes import kill_a_worker_mid_tool
from tests.harness import Harness
from tests.harness import test_settings as make_settings
from tests.standins.receiver import Receiver

DEPLOY = {"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"}


async def launch(h: Harness) -> tuple[str, dict[str, Any]]:
    r = await h.api.post("/threads", json=DEPLOY)
    assert r.status_code == 201, r.text
    await h.drain()
    thread = (await h.api.get(f"/threads/{r.json()['id']}")).json()
    (req,) = thread["open_requests"]
    return thread["id"], req


async def test_it_is_a_cluster_and_the_shards_span_every_primary(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    assert isinstance(cluster_redis, RedisCluster)
    owners = {str(cluster_redis.get_node_from_key(keys.queue(s)).port) for s in range(keys.SHARDS)}
    assert owners == {str(p) for p in cluster.ports}
    # Every key of a thread, and of its shard, lives in one slot.
    tid = "th_0123456789abcdef0123"
    shard = keys.shard_of(tid)
    slots = {key_slot(k.encode()) for k in (keys.log(tid), keys.lease(tid), keys.queue(shard))}
    assert len(slots) == 1


async def test_the_full_approval_cycle(cluster: EmbeddedCluster, cluster_redis: Client) -> None:
    async with Harness(cluster.url) as h:
        tid, req = await launch(h)
        assert req["tool"] == "deploy"
        r = await h.api.post(
            f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
        )
        assert r.status_code == 200, r.text
        await h.drain()
        thread = (await h.api.get(f"/threads/{tid}")).json()
        assert thread["status"] == "done" and "1.5.0 on production" in thread["last_reply"]
        listed = (await h.api.get("/threads")).json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == tid
        assert (await h.api.get("/requests")).json()["total"] == 0


async def test_workers_read_the_queue_without_asking_which_keys_a_read_names(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    # The cluster client would ask a node (COMMAND GETKEYS) before every XREADGROUP: a
    # round trip more per read, on every worker, all the time.
    assert isinstance(cluster_redis, RedisCluster)
    nodes = cluster_redis.get_primaries()
    for node in nodes:
        await cluster_redis.config_resetstat(target_nodes=node)
    async with Harness(cluster.url) as h:
        await launch(h)
    reads = getkeys = 0
    for node in nodes:
        stats = await cluster_redis.info("commandstats", target_nodes=node)
        reads += int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))
        getkeys += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    assert reads > 0 and getkeys == 0


async def test_retention_removes_a_thread_with_its_retries_and_aliases(
    cluster: EmbeddedCluster, cluster_redis: Client, tmp_path: Path
) -> None:
    clock = ManualClock(1_800_000_000.0)
    settings = make_settings(retain_finished_days=1)
    archive = Archive(tmp_path)
    async with (
        Receiver(fail_always=True) as receiver,
        Harness(cluster.url, settings=settings, clock=clock, archive=archive) as h,
    ):
        r = await h.api.post("/threads", json={**DEPLOY, "callback_url": receiver.url})
        tid = r.json()["id"]
        await h.drain()
        (req,) = (await h.api.get(f"/threads/{tid}")).json()["open_requests"]
        decided = {"decision": "approve", "by": "bob"}
        assert (await h.api.post(f"/requests/{req['id']}/decision", json=decided)).is_success
        await h.drain()
        # What a channel links to the thread, in slots other than the thread's.
        state = ChannelState(cluster_redis, "webhook")
        externals = [f"ext-{n}" for n in range(8)]
        for external in externals:
            await state.link(external, tid)
        assert await Retries(cluster_redis).count() > 0  # the callbacks failed

        clock.advance(2 * 86400)
        assert h.rt.retention is not None and await h.rt.retention.sweep() == 1
        assert await Retries(cluster_redis).count() == 0
        assert [await state.resolve(e) for e in externals] == [None] * len(externals)


async def test_a_worker_that_stops_leaves_every_shards_group(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    async def named() -> set[str]:
        streams = [keys.queue(s) for s in range(keys.SHARDS)]
        found = [await cluster_redis.xinfo_consumers(q, keys.GROUP) for q in streams]
        return {f"{s}:{c['name']}" for s, got in enumerate(found) for c in got}

    async with Harness(cluster.url) as h:
        stop = asyncio.Event()
        worker = h.rt.worker(name="live", block_ms=50)
        await worker.queue.ensure_groups()  # before any look at the groups
        serving = asyncio.create_task(worker.run(stop))
        everywhere = {f"{s}:live" for s in range(keys.SHARDS)}
        await h.wait_for(lambda: _equal(named(), everywhere))
        stop.set()
        await serving
        assert await named() == set()
        assert await cluster_redis.zcard(keys.workers()) == 0


async def _equal(got: Any, expected: object) -> bool:
    return bool(await got == expected)


async def test_two_concurrent_decisions_exactly_one_wins(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    async with Harness(cluster.url) as h, Harness(cluster.url) as other:
        tid, req = await launch(h)
        url = f"/requests/{req['id']}/decision"
        approve, reject = await asyncio.gather(
            h.api.post(url, json={"decision": "approve", "by": "bob"}),
            other.api.post(url, json={"decision": "reject", "by": "bob", "reason": "no"}),
        )
        codes = sorted([approve.status_code, reject.status_code])
        assert codes == [200, 409], (approve.text, reject.text)
        loser = approve if approve.status_code == 409 else reject
        assert "already" in loser.json()["detail"] and "bob" in loser.json()["detail"]
        events = await h.rt.log.events(tid)
        assert len([e for e in events if isinstance(e, ApprovalDecision)]) == 1


async def test_a_worker_killed_mid_step_is_finished_by_another(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    await kill_a_worker_mid_tool(cluster_redis, cluster.url, idempotent=False)


async def test_a_primary_restarted_with_its_aof_loses_no_suspended_thread(
    cluster: EmbeddedCluster, cluster_redis: Client
) -> None:
    async with Harness(cluster.url) as h:
        tid, req = await launch(h)
        owner = cluster_redis.get_node_from_key(keys.log(tid))  # type: ignore[union-attr]
        primary = cluster.ports.index(int(owner.port))

        cluster.kill(primary)  # SIGKILL: no shutdown, no final fsync
        cluster.restart(primary)

        state = await h.wait_for(lambda: _suspended(h, tid), timeout=20)
        assert [r.id for r in state.open_requests()] == [req["id"]]
        r = await h.api.post(
            f"/requests/{req['id']}/decision", json={"decision": "approve", "by": "bob"}
        )
        assert r.status_code == 200, r.text
        await h.drain()
        assert (await h.thread(tid)).status is Status.DONE


async def _suspended(h: Harness, tid: str) -> Any:
    try:
        state = await h.rt.log.load(tid)
    except Exception:  # the client is still finding the restarted primary
        return None
    return state if state.status is Status.AWAITING_APPROVAL else None
