"""The deploy agent's inventory: idempotent deploys and rollbacks, bounded in a long run."""

from __future__ import annotations

import pytest

from agents.deploy.inventory import HISTORY, KEYS, Inventory


def test_a_retry_with_the_same_key_does_not_deploy_again() -> None:
    inv = Inventory()
    assert inv.deploy("api", "1.5.0", "production", "k1") == "api 1.4.1 -> 1.5.0 on production"
    assert inv.deploy("api", "1.4.2", "production", "k1") == (
        "api 1.4.2 already deployed to production"
    )
    assert inv.running["api"]["production"] == "1.5.0"
    assert inv.rollback("api", "production", "k2") == "api 1.5.0 -> 1.4.1 on production"
    assert inv.rollback("api", "production", "k2") == "api already rolled back on production"
    assert inv.running["api"]["production"] == "1.4.1"
    with pytest.raises(ValueError, match="no earlier version"):
        inv.rollback("api", "production", "k3")


def test_a_long_run_keeps_the_latest_keys_and_versions_only() -> None:
    inv = Inventory()
    versions = ["1.4.2", "1.5.0"]
    for n in range(3 * KEYS):
        inv.deploy("api", versions[n % 2], "staging", f"key{n}")
    assert len(inv.applied) == KEYS
    assert len(inv.history["api/staging"]) == HISTORY
    # A retry inside the window is still recognised: nothing deployed again.
    latest = 3 * KEYS - 1
    assert inv.deploy("api", "1.4.2", "staging", f"key{latest - KEYS + 1}") == (
        "api 1.4.2 already deployed to staging"
    )
    assert inv.running["api"]["staging"] == versions[latest % 2]
    # Rollbacks reach back HISTORY versions, then there is no earlier one.
    for n in range(HISTORY):
        inv.rollback("api", "staging", f"back{n}")
    with pytest.raises(ValueError, match="no earlier version"):
        inv.rollback("api", "staging", "back-more")
