"""The web inbox over real HTTP: signed in by an emailed link, acting through the one
decision path, and what it lists, refuses, records and exports."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bot.domain import ids
from bot.domain.clock import ManualClock
from bot.domain.limits import MAX_TEXT
from bot.storage import keys
from bot.storage.archive import Archive
from bot.storage.embedded import EmbeddedRedis
from bot.storage.indexes import Indexes
from bot.web.search import AUDIT_LIMIT, AUDIT_SCAN, AUDIT_THREADS, CHUNK
from tests.channels.email.provider import MailProvider
from tests.channels.slack.conftest import BOB, USERS
from tests.channels.slack.slack import Slack
from tests.harness import Harness
from tests.inbox import SCHEMA, approval
from tests.signin import OPS, csrf_of, sign_in, signin_settings
from tests.standins.slack_api import SlackAPI

FIN = "fin@example.test"


@pytest.fixture
async def h(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> AsyncIterator[Harness]:
    clock = ManualClock(time.time())
    async with Harness(redis_server.url, settings=signin_settings(provider), clock=clock) as h:
        yield h


@pytest.fixture
async def ops(h: Harness, provider: MailProvider) -> AsyncIterator[httpx.AsyncClient]:
    web = await sign_in(h, provider, OPS)
    yield web
    await web.aclose()


async def post(web: httpx.AsyncClient, path: str, data: dict[str, Any]) -> httpx.Response:
    page = path.rsplit("/", 1)[0]
    return await web.post(path, data={"csrf": await csrf_of(web, page), **data})


async def test_the_waiting_list_shows_what_waits_for_the_viewer_soonest_first(
    h: Harness, ops: httpx.AsyncClient, provider: MailProvider
) -> None:
    later = await approval(h, policy={"approvers": ["group:deployers"], "expires_in": 3600})
    sooner = await approval(
        h, policy={"approvers": ["group:deployers"], "expires_in": 60}, tool="restart"
    )
    theirs = await approval(h, policy={"approvers": [FIN]})
    # A question that names nobody waits for whom the agent talks to, not for everyone.
    asked = await h.api.post("/questions", json={"question": "Go?", "requester": "ann"})
    nobodys = asked.json()["id"]
    page = (await ops.get("/inbox")).text
    assert nobodys not in page
    assert page.index(sooner) < page.index(later)
    assert theirs not in page
    every = (await ops.get("/inbox", params={"show": "all"})).text
    assert theirs in every and nobodys in every
    only = (await ops.get("/inbox", params={"tool": "restart"})).text
    assert sooner in only and later not in only
    assert 'scaler <span class="count">2</span>' in page


async def test_the_next_and_previous_links_keep_a_filter_with_url_characters(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    tool = "a+b & c#d"  # a tool's name is free text: each of these broke the query string
    for _ in range(26):  # one more than a page
        await approval(h, tool=tool)
    first = await ops.get("/inbox", params={"tool": tool})
    assert "Page 1 of 2" in first.text
    (after,) = re.findall(r'<a rel="next" href="([^"]+)"', first.text)
    second = await ops.get("/inbox" + after.replace("&amp;", "&"))
    assert "Page 2 of 2" in second.text
    assert f"<option selected>{tool.replace('&', '&amp;')}</option>" in second.text
    (before,) = re.findall(r'<a rel="prev" href="([^"]+)"', second.text)
    again = await ops.get("/inbox" + before.replace("&amp;", "&"))
    assert "Page 1 of 2" in again.text
    threads = await ops.get("/inbox/threads", params={"agent": "a&b c", "page": 2})
    assert '<a rel="prev" href="?status=&amp;agent=a%26b+c&amp;page=1">' in threads.text


async def test_approve_reject_and_a_refusal_go_through_the_decision_path(
    h: Harness, ops: httpx.AsyncClient, provider: MailProvider
) -> None:
    first, second = await approval(h), await approval(h)
    done = await post(ops, f"/inbox/requests/{first}/approve", {})
    assert done.status_code == 303
    got = (await h.api.get(f"/approvals/{first}")).json()
    assert got["status"] == "approved" and got["decided_by"][0]["id"] == OPS

    empty = await post(ops, f"/inbox/requests/{second}/reject", {"reason": " "})
    assert empty.status_code == 422 and "Say why" in empty.text
    await post(ops, f"/inbox/requests/{second}/reject", {"reason": "not during the freeze"})
    got = (await h.api.get(f"/approvals/{second}")).json()
    assert (got["status"], got["reason"]) == ("rejected", "not during the freeze")

    fin = await sign_in(h, provider, FIN)
    third = await approval(h)
    page = await fin.get(f"/inbox/requests/{third}")
    assert page.status_code == 200 and "You can&#39;t decide this request" in page.text
    refused = await post(fin, f"/inbox/requests/{third}/approve", {})
    assert refused.status_code == 403
    assert 'role="alert" id="action-error">You can&#39;t decide this request' in refused.text
    assert (await h.api.get(f"/approvals/{third}")).json()["status"] == "open"
    await fin.aclose()


async def test_a_closed_request_names_who_closed_it_not_none(
    h: Harness, ops: httpx.AsyncClient, provider: MailProvider
) -> None:
    # People signed in by an emailed link have no display name: the page names their address.
    rid = await approval(h, policy={"approvers": [OPS, FIN], "min_approvals": 2})
    await post(ops, f"/inbox/requests/{rid}/approve", {})
    fin = await sign_in(h, provider, FIN)
    await post(fin, f"/inbox/requests/{rid}/approve", {})
    page = (await ops.get(f"/inbox/requests/{rid}")).text
    status = re.search(r'id="request-status">\s*(.*?)\s*</p>', page, re.S)
    assert status and status.group(1).startswith(f"Approved by {OPS}, {FIN} at "), page
    rejected = await approval(h)
    await post(ops, f"/inbox/requests/{rejected}/reject", {"reason": "not now"})
    page = (await ops.get(f"/inbox/requests/{rejected}")).text
    assert f"Rejected by {OPS} at " in page and "None" not in page


async def test_an_edit_shows_errors_by_field_then_approves_the_edited_arguments(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    rid = await approval(h)
    form = {"arg.service": "api", "arg.replicas": "0", "arg.region": "us"}
    bad = await post(ops, f"/inbox/requests/{rid}/edit", form)
    assert bad.status_code == 422
    assert re.search(r'id="f-arg-replicas-error">0 is less than the minimum of 1<', bad.text)
    good = await post(ops, f"/inbox/requests/{rid}/edit", {**form, "arg.replicas": "5"})
    assert good.status_code == 303
    got = (await h.api.get(f"/approvals/{rid}")).json()
    assert got["status"] == "approved"
    assert got["arguments"] == {"service": "api", "replicas": 5, "region": "us"}


async def test_a_whole_number_typed_in_an_edit_is_approved_exactly_as_typed(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    # Past 2**53 a float cannot hold every whole number: read as one, the approved value
    # would differ from what the approver typed.
    rid = await approval(h)
    form = {"arg.service": "api", "arg.replicas": "9007199254740993"}
    done = await post(ops, f"/inbox/requests/{rid}/edit", form)
    assert done.status_code == 303, done.text
    got = (await h.api.get(f"/approvals/{rid}")).json()
    assert got["arguments"] == {"service": "api", "replicas": 9007199254740993}


async def test_a_typed_answer_is_a_form_and_reaches_the_agent_as_data(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer"},
            "when": {"type": "string", "format": "date"},
            "canary": {"type": "boolean"},
            "regions": {"type": "array", "items": {"enum": ["eu", "us"]}},
        },
        "required": ["replicas"],
    }
    r = await h.api.post("/questions", json={"question": "How many?", "answer_schema": schema})
    rid = r.json()["id"]
    page = (await ops.get(f"/inbox/requests/{rid}")).text
    assert 'name="ans.when"' in page and 'type="date"' in page
    bad = await post(ops, f"/inbox/requests/{rid}/answer", {"ans.replicas": "many"})
    assert bad.status_code == 422 and "&#39;many&#39; is not a number" in bad.text
    form = {"ans.replicas": "4", "ans.when": "2026-12-01", "ans.canary": "on", "ans.regions": "eu"}
    assert (await post(ops, f"/inbox/requests/{rid}/answer", form)).status_code == 303
    got = (await h.api.get(f"/questions/{rid}")).json()
    assert got["value"] == {"replicas": 4, "when": "2026-12-01", "canary": True, "regions": ["eu"]}


def deep(depth: int) -> str:
    """JSON text of an object ``depth`` levels deep: {"a": {"a": ... 1}}."""
    return '{"a": ' * depth + "1" + "}" * depth


UNSTORABLE = [
    (deep(33), "nested deeper than 32 levels"),
    (deep(250), "nested deeper than 32 levels"),  # was stored: near the readers' limits
    (deep(5_000), "nested deeper than 32 levels"),  # Python's json: a RecursionError, a 500
    ('{"n": NaN}', "not valid JSON"),  # read back, it hashed differently
    ('{"n": 1e400}', "too large"),
    ('{"s": "\\ud800"}', "not valid JSON"),  # a lone surrogate: a 500
]
"""JSON typed in a form that could not be stored and read back, and why it is refused."""


async def test_json_typed_in_an_edit_is_bounded_and_refused_beside_its_field(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "labels": {"type": "object"}}}
    rid = await approval(h, arguments_schema=schema)
    tid = str(ids.thread_of_request(rid))
    version = (await h.thread(tid)).version
    form = {"arg.service": "api", "arg.replicas": "3"}
    for typed, why in UNSTORABLE:
        bad = await post(ops, f"/inbox/requests/{rid}/edit", {**form, "arg.labels": typed})
        assert bad.status_code == 422, (typed[:20], bad.status_code)
        assert re.search(rf'id="f-arg-labels-error">[^<]*{re.escape(why)}', bad.text), typed[:20]
    assert (await h.thread(tid)).version == version  # nothing recorded
    assert (await h.api.get(f"/threads/{tid}")).status_code == 200

    labels = '{"team": "web", "tiers": [[1, 2], [3]]}'
    good = await post(ops, f"/inbox/requests/{rid}/edit", {**form, "arg.labels": labels})
    assert good.status_code == 303
    got = (await h.api.get(f"/approvals/{rid}")).json()
    assert got["arguments"]["labels"] == json.loads(labels)
    assert (await h.api.get(f"/threads/{tid}")).status_code == 200


async def test_json_typed_in_an_answer_is_bounded_and_refused_beside_its_field(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    schema = {"type": "object", "properties": {"detail": {"type": "object"}}}
    r = await h.api.post("/questions", json={"question": "What?", "answer_schema": schema})
    rid = r.json()["id"]
    for typed, why in UNSTORABLE:
        bad = await post(ops, f"/inbox/requests/{rid}/answer", {"ans.detail": typed})
        assert bad.status_code == 422, (typed[:20], bad.status_code)
        assert re.search(rf'id="f-ans-detail-error">[^<]*{re.escape(why)}', bad.text), typed[:20]
    got = await h.api.get(f"/questions/{rid}")
    assert (got.status_code, got.json()["status"]) == (200, "open")

    done = await post(ops, f"/inbox/requests/{rid}/answer", {"ans.detail": '{"a": [1]}'})
    assert done.status_code == 303
    assert (await h.api.get(f"/questions/{rid}")).json()["value"] == {"detail": {"a": [1]}}


async def test_a_reason_or_an_answer_longer_than_a_message_is_refused_on_the_page(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    rid = await approval(h)
    asked = await h.api.post("/questions", json={"question": "Why?"})
    qid = asked.json()["id"]
    long = "x" * (MAX_TEXT + 1)
    refused = await post(ops, f"/inbox/requests/{rid}/reject", {"reason": long})
    assert refused.status_code == 422
    assert f"the reason is longer than {MAX_TEXT} characters" in refused.text
    refused = await post(ops, f"/inbox/requests/{qid}/answer", {"answer": long})
    assert refused.status_code == 422
    assert f"the answer is longer than {MAX_TEXT} characters" in refused.text
    assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "open"
    assert (await h.api.get(f"/questions/{qid}")).json()["status"] == "open"


async def test_a_post_without_the_csrf_token_changes_nothing(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    rid = await approval(h)
    refused = await ops.post(f"/inbox/requests/{rid}/approve", data={})
    assert refused.status_code == 403
    assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "open"


async def test_an_unknown_request_or_thread_is_a_404_page_in_the_inbox_not_json(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    # A person following an old link sees a page saying what was not found, in the inbox's
    # layout (its sections, signed in), with a way back; the API still answers JSON.
    for path, said in (
        ("/inbox/requests/nope", "no request &#39;nope&#39;"),
        ("/inbox/threads/th_nope", "no thread &#39;th_nope&#39;"),
    ):
        page = await ops.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert "<h1>Not found</h1>" in page.text and said in page.text, page.text
        assert 'href="/inbox/threads"' in page.text and "Signed in as" in page.text
    refused = await ops.post(
        "/inbox/requests/nope/approve", data={"csrf": await csrf_of(ops, "/inbox")}
    )
    assert refused.status_code == 404 and refused.headers["content-type"].startswith("text/html")
    assert "no request &#39;nope&#39;" in refused.text
    api = await h.api.get("/threads/th_nope")
    assert api.status_code == 404 and api.json()["error"] == "not_found"


async def test_audit_exports_match_the_decisions_taken(h: Harness, ops: httpx.AsyncClient) -> None:
    first, second = await approval(h), await approval(h, tool="restart")
    await post(ops, f"/inbox/requests/{first}/approve", {})
    await post(ops, f"/inbox/requests/{second}/reject", {"reason": "no"})
    rows = list(csv.DictReader(io.StringIO((await ops.get("/inbox/audit.csv")).text)))
    assert [(r["request"], r["outcome"], r["by_id"], r["tool"]) for r in rows] == [
        (second, "reject", f"web:{OPS}", "restart"),
        (first, "approve", f"web:{OPS}", "scale"),
    ]
    lines = (await ops.get("/inbox/audit.jsonl", params={"outcome": "reject"})).text
    (only,) = [json.loads(line) for line in lines.splitlines()]
    assert (only["request"], only["reason"], only["agent"]) == (second, "no", "scaler")
    api = (await h.api.get("/audit", params={"until": "2100-01-01T00:00:00Z"})).json()["items"]
    assert {r["hash"] for r in api} == {r["hash"] for r in rows}


async def test_a_csv_export_cell_a_spreadsheet_would_run_as_a_formula_is_text(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    reason = '=HYPERLINK("http://x.test","open")'
    rid = await approval(h, tool="@tool")
    await post(ops, f"/inbox/requests/{rid}/reject", {"reason": reason})
    (row,) = csv.DictReader(io.StringIO((await ops.get("/inbox/audit.csv")).text))
    assert (row["reason"], row["tool"], row["request"]) == ("'" + reason, "'@tool", rid)
    (line,) = (await ops.get("/inbox/audit.jsonl")).text.splitlines()
    assert (json.loads(line)["reason"], json.loads(line)["tool"]) == (reason, "@tool")


def old_record(i: int, *, at: float | None = None, threads: int = 20) -> dict[str, Any]:
    """An approval recorded before (a day ago, or ``at``), by ``approver<i>``, in one of
    ``threads`` threads, as its stream holds it."""
    tid = f"th_{i % threads:020x}"
    return {
        "at": time.time() - 86400 + i if at is None else at,
        "thread": tid,
        "kind": "decision",
        "outcome": "approve",
        "request": f"{tid}.r{i:08x}",
        "by": f"approver{i:05d}",
        "by_id": f"web:approver{i:05d}@example.test",
        "channel": "web",
        "reason": None,
        "args_hash": None,
        "event": f"ev_{i:020x}",
        "hash": f"{i:064x}",
    }


async def store(redis: Redis, records: list[dict[str, Any]]) -> None:
    """Add audit records to their streams, each stamped when it was decided."""
    pipe = redis.pipeline(transaction=False)
    for r in records:
        entry = f"{int(r['at'] * 1000)}-0"
        pipe.xadd(keys.audit(keys.shard_of(r["thread"])), {"r": json.dumps(r)}, id=entry)
    await pipe.execute()


async def test_the_audit_page_shows_the_newest_says_it_was_cut_and_the_exports_hold_all(
    h: Harness, ops: httpx.AsyncClient, redis: Redis
) -> None:
    older = [old_record(i) for i in range(AUDIT_LIMIT + 100)]  # more than the page shows
    await store(redis, older)
    rid = await approval(h)
    assert (await post(ops, f"/inbox/requests/{rid}/approve", {})).status_code == 303

    page = (await ops.get("/inbox/audit")).text
    shown = re.findall(r'<td class="id"><a href="/inbox/requests/([^"]+)"', page)
    assert len(shown) == AUDIT_LIMIT
    assert shown[:2] == [rid, older[-1]["request"]]  # the newest first
    assert older[0]["request"] not in shown
    assert f"the newest {AUDIT_LIMIT:,} matching records; there are more" in page
    # A search filters before it cuts: it finds what the newest 5,000 leave out.
    found = (await ops.get("/inbox/audit", params={"person": "APPROVER00000"})).text
    assert re.findall(r'<a href="/inbox/requests/([^"]+)"', found) == [older[0]["request"]]
    assert "there are more" not in found
    mine = (await ops.get("/inbox/audit", params={"agent": "scaler", "tool": "scale"})).text
    assert re.findall(r'<a href="/inbox/requests/([^"]+)"', mine) == [rid]

    # The exports hold every match, newest first.
    got = await ops.get("/inbox/audit.csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert [r["request"] for r in rows] == [rid, *(r["request"] for r in reversed(older))]
    assert (rows[0]["by_id"], rows[0]["agent"], rows[0]["tool"]) == (
        f"web:{OPS}",
        "scaler",
        "scale",
    )
    lines = (await ops.get("/inbox/audit.jsonl", params={"person": "approver0000"})).text
    assert [json.loads(line)["by"] for line in lines.splitlines()] == [
        f"approver{i:05d}" for i in range(9, -1, -1)
    ]


@asynccontextmanager
async def archived_approval(
    redis_server: EmbeddedRedis, provider: MailProvider, tmp_path: Path
) -> AsyncIterator[tuple[Harness, str]]:
    """A harness that keeps finished threads a day, with a request approved and then its
    thread and record archived by retention: the harness and the request."""
    clock = ManualClock(time.time())
    settings = signin_settings(provider, retain_finished_days=1)
    archive = Archive(tmp_path / "archive")
    async with Harness(redis_server.url, settings=settings, clock=clock, archive=archive) as h:
        rid = await approval(h)
        body = {"decision": "approve", "by": OPS}
        assert (await h.api.post(f"/requests/{rid}/decision", json=body)).status_code == 200
        await h.drain()
        clock.advance(2 * 86400)
        assert h.rt.retention is not None
        await h.rt.retention.sweep()
        yield h, rid


async def test_the_audit_exports_read_what_retention_archived_after_what_redis_holds(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, tmp_path: Path
) -> None:
    async with archived_approval(redis_server, provider, tmp_path) as (h, first):
        assert not await redis.exists(keys.log(str(ids.thread_of_request(first))))
        assert not any([await redis.xlen(keys.audit(s)) for s in range(keys.SHARDS)])

        web = await sign_in(h, provider, OPS)
        second = await approval(h, tool="restart")
        assert (await post(web, f"/inbox/requests/{second}/approve", {})).status_code == 303
        got = (await web.get("/inbox/audit.csv")).text
        rows = [(r["request"], r["agent"], r["tool"]) for r in csv.DictReader(io.StringIO(got))]
        assert rows == [(second, "scaler", "restart"), (first, "scaler", "scale")]
        page = (await web.get("/inbox/audit", params={"tool": "scale"})).text
        assert re.findall(r'<a href="/inbox/requests/([^"]+)"', page) == [first]
        await web.aclose()


async def test_an_audit_search_stops_where_one_page_view_must_and_says_how_to_go_on(
    h: Harness, ops: httpx.AsyncClient, redis: Redis
) -> None:
    # Records each of another thread: 200 on March 1st, then 100 fewer than a page view
    # examines on the 2nd.
    march_1 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    count = AUDIT_SCAN + 100
    records = [
        old_record(i, at=march_1 + i if i < 200 else march_1 + 86400 + i, threads=count)
        for i in range(count)
    ]
    await store(redis, records)

    # Only the oldest record is approver00000's: past what the page examines.
    page = await ops.get("/inbox/audit", params={"person": "approver00000"})
    assert page.status_code == 200 and "No decisions match." in page.text
    assert (
        f"stopped after examining the newest {AUDIT_SCAN:,} records in its dates (back to"
        " 2024-03-01T00:01:40.000Z) and found 0 matches among them"
    ) in page.text
    assert "narrow the dates: To 2024-03-01 or earlier" in page.text
    older = re.findall(r'<a href="/inbox/audit\?([^"]+)">Search older records</a>', page.text)
    assert older == ["person=approver00000&amp;until=2024-03-01"]
    page = await ops.get("/inbox/audit", params={"person": "approver00000", "until": "2024-03-01"})
    shown = re.findall(r'<a href="/inbox/requests/([^"]+)"', page.text)
    assert shown == [records[0]["request"]] and "stopped" not in page.text

    # An agent is known from the record's thread: reading one for each record stops sooner.
    page = await ops.get("/inbox/audit", params={"agent": "scaler"})
    assert "No decisions match." in page.text
    assert f"stopped after examining the newest {AUDIT_THREADS:,} records" in page.text

    # The exports, asked for deliberately, examine every record in their dates.
    got = await ops.get("/inbox/audit.csv", params={"person": "approver00000"})
    assert [r["request"] for r in csv.DictReader(io.StringIO(got.text))] == [records[0]["request"]]


async def test_an_audit_search_reads_an_archived_thread_once(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, tmp_path: Path
) -> None:
    async with archived_approval(redis_server, provider, tmp_path) as (h, rid):
        archive = h.archive
        assert archive is not None
        tid = str(ids.thread_of_request(rid))
        assert not await redis.exists(keys.log(tid)) and archive.read(tid) is not None
        # More records of it than one read of threads takes (as many votes would make),
        # after the one its stream had.
        now = time.time() + 1
        votes = [
            {**old_record(i, at=now + i), "thread": tid, "request": rid}
            for i in range(2 * CHUNK + 1)
        ]
        await store(redis, votes)

        opened = files_opened_under(tmp_path / "archive")
        web = await sign_in(h, provider, OPS)
        page = (await web.get("/inbox/audit", params={"tool": "scale"})).text
        assert re.findall(r'<a href="/inbox/requests/([^"]+)"', page) == [rid] * (2 * CHUNK + 2)
        assert [Path(p).name for p in opened].count(f"{tid}.jsonl") == 1  # read once
        await web.aclose()


async def test_the_audit_page_reads_the_archived_records_it_needs_and_no_older(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider, tmp_path: Path
) -> None:
    archive = Archive(tmp_path / "archive")
    start = time.time() - 30 * 86400
    records = [old_record(i, at=start + i) for i in range(12_000)]
    oldest: list[str] = []  # each shard's oldest batch
    for shard in (0, 1):  # as retention moves them out of Redis: oldest first, in batches
        mine = records[shard::2]
        for b in range(0, len(mine), 2000):
            first = f"{int(mine[b]['at'] * 1000)}-0"
            batch = [(f"{int(r['at'] * 1000)}-0", json.dumps(r)) for r in mine[b : b + 2000]]
            archive.write_audit(shard, batch, start)
            if b == 0:
                oldest += [p.name for p in archive.root.glob(f"audit/*/{shard:02d}-{first}.*")]
    assert len(oldest) == 2
    async with Harness(redis_server.url, settings=signin_settings(provider), archive=archive) as h:
        web = await sign_in(h, provider, OPS)
        opened = files_opened_under(tmp_path / "archive")
        page = (await web.get("/inbox/audit")).text
        shown = re.findall(r'<td class="id"><a href="/inbox/requests/([^"]+)"', page)
        assert shown == [r["request"] for r in reversed(records[-AUDIT_LIMIT:])]
        assert opened and not {Path(p).name for p in opened} & set(oldest)

        got = await web.get("/inbox/audit.csv")
        rows = list(csv.DictReader(io.StringIO(got.text)))
        assert [r["request"] for r in rows] == [r["request"] for r in reversed(records)]
        assert set(oldest) <= {Path(p).name for p in opened}
        await web.aclose()


def files_opened_under(root: Path) -> list[str]:
    """The files under ``root`` this process opens from now on (Python's audit hooks see
    every ``open``, in every thread)."""
    opened: list[str] = []
    prefix = str(root)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | Path) and str(args[0]).startswith(prefix):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    return opened


@pytest.mark.parametrize("docs", ["/docs", "/redoc"])
async def test_api_docs_need_no_internet(h: Harness, docs: str) -> None:
    page = (await h.http.get(docs)).text
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert scripts and all(s.startswith("/") for s in scripts), scripts
    for path in scripts:
        assert (await h.http.get(path)).status_code == 200, path


async def test_a_hosted_agents_call_is_edited_in_a_form_made_from_its_tools_model(
    h: Harness, ops: httpx.AsyncClient
) -> None:
    body = {"agent": "deploy", "user": "ann", "text": "deploy api 1.5.0 to production"}
    tid = (await h.api.post("/threads", json=body)).json()["id"]
    await h.drain()
    (req,) = (await h.api.get(f"/threads/{tid}")).json()["open_requests"]
    page = (await ops.get(f"/inbox/requests/{req['id']}")).text
    assert 'name="arg.environment"' in page and 'value="staging"' in page  # the model's enum
    edit = {"arg.service": "api", "arg.version": "1.5.0", "arg.environment": "staging"}
    unconfirmed = await post(ops, f"/inbox/requests/{req['id']}/edit", edit)
    assert unconfirmed.status_code == 422 and "deploy is a risky tool" in unconfirmed.text
    assert (await h.thread(tid)).requests[req["id"]].is_open
    confirmed = await post(ops, f"/inbox/requests/{req['id']}/edit", {**edit, "confirm": "yes"})
    assert confirmed.status_code == 303
    thread = await h.thread(tid)
    assert thread.requests[req["id"]].args == {
        "service": "api",
        "version": "1.5.0",
        "environment": "staging",
    }


async def test_a_request_opened_before_summaries_were_kept_is_listed_and_its_summary_stored(
    h: Harness, ops: httpx.AsyncClient, redis: Redis
) -> None:
    rid = await approval(h)
    shard = keys.shard_of(str(ids.thread_of_request(rid)))
    # An older deployment opened it: in the open index, with no summary beside it.
    assert await redis.hdel(keys.waiting(shard), rid) == 1
    other = Indexes(redis)  # another process, which read the shard before the upgrade
    assert await other.waiting() == []

    assert rid in (await ops.get("/inbox")).text
    assert await redis.hexists(keys.waiting(shard), rid)  # built once, from the thread
    (listed,) = await other.waiting()
    assert (listed.request, listed.tool, listed.requester) == (rid, "scale", "ann@example.test")


async def test_who_asked_in_slack_unnamed_by_slack_is_told_apart_by_their_slack_account(
    redis_server: EmbeddedRedis, redis: Redis, provider: MailProvider
) -> None:
    # Deployers by email. Bob asks in Slack while users.info fails: known by his id alone.
    deployers = ["bob@example.com", "carol@example.com", "dan@example.com"]
    groups = {"deployers": deployers, "finance": deployers}
    async with SlackAPI(users=USERS) as api:
        settings = signin_settings(provider, api, approver_groups=groups)
        async with Harness(redis_server.url, settings=settings) as h:
            bob = await sign_in(h, provider, "bob@example.com")  # matched to slack:U0BOB0001
            carol = await sign_in(h, provider, "carol@example.com")
            api.fail_next("users.lookupByEmail", status=500)
            dan = await sign_in(h, provider, "dan@example.com")  # matched to nobody
            api.fail_next("users.info", status=500, times=100)
            await Slack(h.http, api).mention("deploy api 1.5.0 to production", BOB)
            await h.drain()
            (item,) = (await h.api.get("/requests", params={"status": "open"})).json()["items"]
            rid = item["id"]
            sure = {"confirm": "yes"}  # a deploy to production is risky: confirmed at once

            assert rid not in (await bob.get("/inbox")).text
            refused = await post(bob, f"/inbox/requests/{rid}/approve", sure)
            assert refused.status_code == 403 and "You asked for this" in refused.text
            assert rid not in (await dan.get("/inbox")).text
            unsure = await post(dan, f"/inbox/requests/{rid}/approve", sure)
            assert unsure.status_code == 403
            assert "can&#39;t tell you apart from who asked" in unsure.text
            assert (await h.api.get(f"/approvals/{rid}")).json()["status"] == "open"

            assert rid in (await carol.get("/inbox")).text
            assert (await post(carol, f"/inbox/requests/{rid}/approve", sure)).status_code == 303
            got = (await h.api.get(f"/approvals/{rid}")).json()
            assert got["status"] == "approved" and got["decided_by"][0]["id"] == "carol@example.com"
