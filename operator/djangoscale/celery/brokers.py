"""Reading queue lengths (ready + unacknowledged) from the broker, the source of worker scaling.

- RabbitMQ: the management HTTP API, `GET /api/queues/{vhost}/{name}`, fields
  `messages_ready` and `messages_unacknowledged` (refreshed every `collect_statistics_interval`,
  5 s by default). A queue that does not exist yet (404) has no messages.
- Redis (kombu's transport): `LLEN` of the queue's priority lists plus its entries in the
  `unacked` hash.

A reader raises `BrokerUnavailable` when it cannot answer; the poller then holds the last value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from djangoscale.celery.queues import (
    REDIS_UNACKED_KEY,
    QueueLength,
    rabbitmq_vhost,
    redis_queue_keys,
    redis_unacked_by_queue,
)


class BrokerUnavailable(Exception):
    """The broker could not be read this round."""


class QueueReader(Protocol):
    async def read(self, queues: Iterable[str]) -> dict[str, QueueLength]: ...

    async def close(self) -> None: ...


class RabbitMQReader:
    def __init__(self, management_url: str, broker_url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(management_url)
        self.user = parts.username or "guest"
        self.password = parts.password or "guest"
        netloc = parts.hostname or "localhost"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self.base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self.vhost = rabbitmq_vhost(broker_url)
        self.timeout = timeout
        self._session: Any = None

    def queue_url(self, queue: str) -> str:
        return f"{self.base}/api/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}"

    async def read(self, queues: Iterable[str]) -> dict[str, QueueLength]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                auth=aiohttp.BasicAuth(self.user, self.password),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        lengths = {}
        for queue in queues:
            try:
                async with self._session.get(self.queue_url(queue)) as response:
                    if response.status == 404:
                        lengths[queue] = QueueLength(0, 0)
                        continue
                    if response.status != 200:
                        raise BrokerUnavailable(f"RabbitMQ management API: {response.status}")
                    body = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                raise BrokerUnavailable(f"RabbitMQ management API: {error!r}") from error
            lengths[queue] = QueueLength(
                int(body.get("messages_ready") or 0),
                int(body.get("messages_unacknowledged") or 0),
            )
        return lengths

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class RedisReader:
    def __init__(self, broker_url: str, timeout: float = 5.0) -> None:
        self.url = broker_url
        self.timeout = timeout
        self._client: Any = None

    async def read(self, queues: Iterable[str]) -> dict[str, QueueLength]:
        import redis.asyncio
        import redis.exceptions

        names = list(queues)
        if self._client is None:
            self._client = redis.asyncio.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for queue in names:
                    for key in redis_queue_keys(queue):
                        pipe.llen(key)
                pipe.hvals(REDIS_UNACKED_KEY)
                results = await pipe.execute()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            raise BrokerUnavailable(f"Redis: {error!r}") from error
        unacked = redis_unacked_by_queue(results[-1], names)
        steps = len(redis_queue_keys(""))
        return {
            queue: QueueLength(sum(results[i * steps:(i + 1) * steps]), unacked[queue])
            for i, queue in enumerate(names)
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def reader_for(broker_type: str, url: str, management_url: str | None) -> QueueReader:
    if broker_type == "redis":
        return RedisReader(url)
    if not management_url:
        raise ValueError("a RabbitMQ broker Secret needs a managementUrl key for queue lengths")
    return RabbitMQReader(management_url, url)
