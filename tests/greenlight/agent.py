"""An agent process for the restart test: it deploys once approved, appending to a file.

Run as ``python -m tests.greenlight.agent RUNS_FILE VERSION`` with GREENLIGHT_URL and
GREENLIGHT_TOKEN set; httpx logs each exchange to stderr, which the test reads.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from greenlight import require_approval


@require_approval(policy={"approvers": ["bob"]}, summary="Release the api")
def deploy(version: str, replicas: int = 3) -> None:
    with Path(sys.argv[1]).open("a", encoding="utf-8") as runs:
        runs.write(f"{version} {replicas}\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    deploy(sys.argv[2])
