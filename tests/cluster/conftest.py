"""A real three-primary Redis Cluster of the embedded binary, for the cluster tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis

from bot.storage.connection import Client, connect
from bot.storage.embedded_cluster import EmbeddedCluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    # AOF "always": a primary SIGKILLed by a test has every acknowledged write on disk.
    found = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), appendfsync="always")
    found.start()
    yield found
    found.stop()


@pytest.fixture
async def cluster_redis(cluster: EmbeddedCluster) -> AsyncIterator[Client]:
    """A cluster client, as production connects, on emptied primaries."""
    for url in cluster.urls:
        with sync_redis.Redis.from_url(url) as node:
            node.flushall()
    client = await connect(cluster.url)
    yield client
    await client.aclose()
