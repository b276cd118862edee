"""A worker started before Redis waits for it instead of exiting (seen in the chaos soak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from bot.settings import Settings
from bot.storage import keys
from bot.storage.embedded import EmbeddedRedis, free_port
from tests.harness import DEMO_GROUPS
from tests.scenarios.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_started_before_redis_serves_once_redis_is_up(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "DATA_DIR": str(tmp_path / "data"),
            "APPROVER_GROUPS": json.dumps(DEMO_GROUPS), "LOG_LEVEL": "INFO"}  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    server = EmbeddedRedis(tmp_path / "redis", port=port)
    try:
        wait_for(
            lambda: "waiting for Redis" in log.read_text(),
            "the worker to say it waits",
            [worker],
            log.read_text,
        )
        server.start()
        with redis.Redis(port=port, decode_responses=True) as client:
            wait_for(
                lambda: client.zcard(keys.workers()),
                "the worker's heartbeat",
                [worker],
                log.read_text,
            )
    finally:
        worker.terminate()
        worker.wait(timeout=10)
        server.stop()
    assert worker.returncode == 0, log.read_text()
