"""Settings: a bad value or an unknown key stops start-up with the variable's name."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.domain.errors import ConfigError
from bot.settings import Settings
from tests.scenarios.processes import run_bot


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting from the developer's shell, and a working folder with no ``.env``."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_invalid_value_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "abc")
    with pytest.raises(ConfigError) as got:
        Settings.load()
    assert "PORT" in got.value.message and "'abc'" in got.value.message


def test_an_unknown_key_in_dotenv_is_named_without_its_value(clean: Path) -> None:
    (clean / ".env").write_text("PORT=8001\nAPI_TOKNE=hunter2\n")
    with pytest.raises(ConfigError) as got:
        Settings.load()
    assert "API_TOKNE: not a Greenlight setting" in got.value.message
    assert "hunter2" not in got.value.message  # a misspelt secret is still a secret


def test_empty_values_mean_unset(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean / ".env").write_text("PORT=\nREDIS_URL=\nMODEL=claude-x\n")
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    monkeypatch.setenv("LOG_LEVEL", "")
    settings = Settings.load()
    assert settings.port == 8000 and settings.redis_url is None
    assert settings.webhook_secret is None and settings.log_level == "INFO"
    assert settings.model == "claude-x"  # the file was read


def test_json_that_does_not_parse_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROVER_GROUPS", "{deployers: [ann]}")
    with pytest.raises(ConfigError, match=r"APPROVER_GROUPS: not valid JSON"):
        Settings.load()

    monkeypatch.setenv("APPROVER_GROUPS", '{"deployers": [42]}')
    with pytest.raises(ConfigError, match=r"APPROVER_GROUPS \(at deployers\.0\)"):
        Settings.load()


def test_run_with_an_invalid_value_exits_2_naming_it(clean: Path) -> None:
    done = run_bot("run", clean, {"PORT": "abc", "DATA_DIR": str(clean / "data")})
    assert done.returncode == 2, done.stderr
    assert "PORT" in done.stderr and "'abc'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (clean / "data").exists()  # nothing started: no Redis, no token


@pytest.mark.parametrize(
    "groups",
    ['{"deployers": [], "finance": []}', '{"deployer": ["bob"], "finance": ["fin"]}'],
)
def test_run_with_approvers_that_resolve_to_nobody_exits_2(clean: Path, groups: str) -> None:
    """As ``.env.example`` used to ship it, or with a misspelt group: no start, no Redis."""
    done = run_bot("run", clean, {"APPROVER_GROUPS": groups, "DATA_DIR": str(clean / "data")})
    assert done.returncode == 2, done.stderr
    assert "agent 'deploy', tool 'deploy': approver group 'deployers'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (clean / "data" / "redis").exists()


def test_run_with_a_redis_url_that_does_not_parse_exits_2_naming_it(clean: Path) -> None:
    """One line naming REDIS_URL, not a traceback, and not the URL: it may hold a password."""
    env = {"REDIS_URL": "redis//:s3cret-pw@127.0.0.1:6379", "DATA_DIR": str(clean / "data")}
    env |= {"APPROVER_GROUPS": '{"deployers": ["bob"], "finance": ["bob"]}'}
    done = run_bot("worker", clean, env)
    assert done.returncode == 2, done.stderr
    assert "REDIS_URL is not a Redis URL" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr


def test_a_worker_told_the_server_kind_still_waits_for_redis_then_exits_2(clean: Path) -> None:
    """``?cluster=no`` spares the INFO probe, not the wait: REDIS_WAIT bounds it, then one line."""
    with socket.socket() as closed:  # bound, not listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0?cluster=no", "REDIS_WAIT": "0"}
        env |= {"APPROVER_GROUPS": '{"deployers": ["bob"], "finance": ["bob"]}'}
        env |= {"DATA_DIR": str(clean / "data")}
        done = run_bot("worker", clean, env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Redis did not answer within 0 s" in done.stderr
    assert "Traceback" not in done.stderr
