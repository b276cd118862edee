"""The audit trail end to end: REST and the CLI find edits made in Redis; exports match."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from bot.domain.events import stored_id
from bot.domain.hashing import chain_hash
from bot.storage import keys
from bot.storage.audit import from_stored_record
from tests.harness import Harness
from tests.test_cli import DEPLOY, cli, h, open_request, thread_status

__all__ = ["h"]  # the fixture


async def decided(h: Harness, decision: str) -> tuple[str, dict[str, Any]]:
    r = await h.api.post("/threads", json=DEPLOY)
    tid = r.json()["id"]
    req = await open_request(h)
    body = {"decision": decision, "by": "bob", "reason": "audit test"}
    assert (await h.api.post(f"/requests/{req['id']}/decision", json=body)).status_code == 200
    await thread_status(h, tid, "done")
    return tid, req


async def test_verify_reports_an_event_edited_removed_or_moved_in_redis(h: Harness) -> None:
    tid, _ = await decided(h, "approve")
    chain = (await h.api.get(f"/threads/{tid}/audit")).json()
    assert chain["intact"] and chain["events"] >= 6
    got = await cli(h, "audit", "verify", tid)
    assert got.exit_code == 0 and f"{tid}: intact" in got.stdout

    log = keys.log(tid)
    stored = await h.redis.lrange(log, 0, -1)  # type: ignore[misc]
    edited = stored[1].replace("deploy api 1.5.0", "deploy api 9.9.9")
    await h.redis.lset(log, 1, edited)  # type: ignore[misc]
    chain = (await h.api.get(f"/threads/{tid}/audit")).json()
    assert not chain["intact"] and [b["index"] for b in chain["breaks"]] == [2]
    got = await cli(h, "audit", "verify", tid)
    assert got.exit_code == 1 and "event 2" in got.stdout and "edited" in got.stdout

    await h.redis.lset(log, 1, stored[1])  # put back, then remove one
    await h.redis.lrem(log, 1, stored[3])  # type: ignore[misc]
    assert [b["index"] for b in (await h.api.get(f"/threads/{tid}/audit")).json()["breaks"]] == [3]

    await h.redis.delete(log)  # rebuilt in another order
    await h.redis.rpush(log, stored[0], stored[2], stored[1], *stored[3:])  # type: ignore[misc]
    assert (await h.api.get(f"/threads/{tid}/audit")).json()["breaks"]

    for unknown in ["th_0000000000000000dead", "not-a-thread"]:
        assert (await h.api.get(f"/threads/{unknown}/audit")).status_code == 404


async def test_export_rows_match_the_decisions_taken(h: Harness) -> None:
    approved, first = await decided(h, "approve")
    rejected, second = await decided(h, "reject")

    got = await cli(h, "audit", "export", "--format", "csv")
    assert got.exit_code == 0, got.output
    rows = list(csv.DictReader(io.StringIO(got.stdout)))
    assert [(r["thread"], r["request"], r["outcome"], r["by_id"]) for r in rows] == [
        (approved, first["id"], "approve", "api:bob"),
        (rejected, second["id"], "reject", "api:bob"),
    ]
    assert all(r["reason"] == "audit test" and r["channel"] == "api" for r in rows)
    # Each row carries the chain hash of the decision event as stored.
    for row in rows:
        stored = await h.redis.lrange(keys.log(row["thread"]), 0, -1)  # type: ignore[misc]
        (raw,) = [s for s in stored if stored_id(chain_hash(s)) == row["event"]]
        assert row["hash"] == chain_hash(raw)

    got = await cli(h, "audit", "export", "--since", "2000-01-01", "--until", "2000-01-02")
    assert got.exit_code == 0 and got.stdout == ""
    lines = (await cli(h, "audit", "export")).stdout.splitlines()
    assert [json.loads(line)["thread"] for line in lines] == [approved, rejected]


async def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_text(h: Harness) -> None:
    reasons = ['=HYPERLINK("http://x.test","open")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
    for reason in reasons:
        tid = (await h.api.post("/threads", json=DEPLOY)).json()["id"]
        req = await open_request(h)
        body = {"decision": "reject", "by": "bob", "reason": reason}
        assert (await h.api.post(f"/requests/{req['id']}/decision", json=body)).status_code == 200
        await thread_status(h, tid, "done")
    got = await cli(h, "audit", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(got.stdout, newline="")))
    assert [r["reason"] for r in rows] == ["'" + r for r in reasons]
    assert all(r["by_id"] == "api:bob" for r in rows)  # nothing else changed
    lines = (await cli(h, "audit", "export")).stdout.splitlines()
    assert [json.loads(line)["reason"] for line in lines] == reasons  # JSON Lines: exact


async def test_redis_keeps_a_record_short_and_every_reader_gets_it_whole(h: Harness) -> None:
    tid, req = await decided(h, "approve")
    (stored,) = [
        fields["r"] for s in range(keys.SHARDS) for _, fields in await h.redis.xrange(keys.audit(s))
    ]
    assert stored.startswith("[") and tid + '"' not in stored and '"by_id"' not in stored
    (record,) = (await h.api.get("/audit")).json()["items"]
    assert record == from_stored_record(stored)
    assert (record["thread"], record["request"], record["kind"]) == (tid, req["id"], "decision")
    assert (record["by"], record["by_id"], record["channel"]) == ("bob", "api:bob", "api")
