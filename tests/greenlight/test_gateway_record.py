"""The gateway's call log: made ready at start-up, so no call is the first to find it broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenlight.errors import ConfigError
from greenlight.gateway.record import CallLog, Entry


def test_a_log_in_a_directory_not_made_yet_is_made_and_written(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "greenlight" / "files.jsonl"
    log = CallLog(path)
    log.write(Entry("deploy", {"version": "1.5.0"}, "rejected", "deploys", "th_1.r1"))
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["request_id"] == "th_1.r1"
    assert CallLog(path).spent == {"th_1.r1"}  # read back by the next run


def test_a_log_that_cannot_be_written_stops_start_up_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the directory should be")
    path = blocker / "files.jsonl"
    with pytest.raises(ConfigError, match=f"call log {path}: cannot be written"):
        CallLog(path)
