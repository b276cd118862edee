"""The Procfile's processes as operators run them: JSON logs, and a worker's METRICS_PORT.

Each process counts what it did: the web process the decision, the worker the
steps, the model turns and the cycle. The shared gauges read the same from both.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis, free_port
from tests.scenarios.processes import run_bot
from tests.scenarios.test_procfile import TOKEN, Processes, procs, redis_url

__all__ = ["procs", "redis_url"]  # the fixtures, shared with the Procfile's scenario
OPEN = ("greenlight_open_requests", frozenset({("agent", "deploy"), ("kind", "approval")}))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_json_logs_and_metrics_from_a_web_and_a_worker_process(procs: Processes) -> None:
    procs.env |= {"LOG_FORMAT": "json"}
    web = procs.start("web")
    metrics_port = free_port()
    procs.env |= {"METRICS_PORT": str(metrics_port)}
    worker = procs.start("worker")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.Client(base_url=f"http://127.0.0.1:{procs.env['PORT']}", headers=auth, timeout=5)
    scraper = httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5)

    def get(path: str) -> Any:
        r = http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    with http, scraper:
        procs.wait_for(lambda: http.get("/readyz").status_code == 200, "the worker's heartbeat")
        procs.wait_for(lambda: scraper.get("/metrics").status_code == 401, "the metrics port")
        r = http.post("/threads", json={"agent": "deploy", "user": "ann",
                                        "text": "deploy api 1.5.0 to production"})  # fmt: skip
        tid = r.json()["id"]
        (req,) = procs.wait_for(lambda: get("/requests")["items"], "the approval request")
        worker_side = samples(scraper.get("/metrics", headers=auth).text)
        assert worker_side[OPEN] == 1

        r = http.post(f"/requests/{req['id']}/decision",
                      json={"decision": "approve", "by": "bob"})  # fmt: skip
        assert r.status_code == 200, r.text
        procs.wait_for(lambda: get(f"/threads/{tid}")["status"] == "done", "the deploy to run")

        web_side = samples(http.get("/metrics").text)
        worker_side = samples(scraper.get("/metrics", headers=auth).text)
    decided = frozenset({("agent", "deploy"), ("kind", "approval"), ("outcome", "approved")})
    assert web_side[("greenlight_time_to_decision_seconds_count", decided)] == 1
    assert ("greenlight_time_to_decision_seconds_count", decided) not in worker_side
    assert worker_side[("greenlight_cycles_total", frozenset({("agent", "deploy")}))] == 1
    assert worker_side[("greenlight_model_seconds_count", frozenset({("model", "offline")}))] >= 2
    assert web_side[OPEN] == worker_side[OPEN] == 0  # read from Redis: the same in both

    for process in (web, worker):
        process.send_signal(signal.SIGTERM)
    assert [p.wait(timeout=15) for p in (web, worker)] == [0, 0], procs.logs()
    for kind in ("web", "worker"):
        text = (procs.tmp / f"{kind}.log").read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        about = [line for line in lines if tid in line["message"]]
        assert about, (kind, text[-2000:])
        assert all(line.get("thread_id") == tid for line in about), about
        assert TOKEN not in text and "Traceback" not in text


def test_a_worker_that_fails_stops_its_process_instead_of_idling(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A queue key Redis refuses to use (as an ACL refusing XGROUP would): the process ends,
    non-zero, so that its supervisor sees it, instead of serving nothing until a signal."""
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    redis.set(keys.queue(0), "not a stream")
    env = {"REDIS_URL": redis_server.url, "DATA_DIR": str(tmp_path / "data")}
    env |= {"APPROVER_GROUPS": '{"deployers": ["bob"], "finance": ["bob"]}'}
    done = run_bot("worker", tmp_path, env)
    redis.flushall()
    redis.close()
    assert done.returncode != 0
    assert "WRONGTYPE" in done.stderr
