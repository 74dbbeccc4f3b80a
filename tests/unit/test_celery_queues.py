"""Queue-length math and broker keys (pure), and the `djangoscale worker` command line."""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.error
import urllib.request

import pytest

from djangoscale.celery import worker
from djangoscale.celery.brokers import RabbitMQReader, RedisReader, reader_for
from djangoscale.celery.queues import (
    HoldLast,
    QueueLength,
    group_total,
    per_pod_values,
    rabbitmq_vhost,
    redis_queue_keys,
    redis_unacked_by_queue,
)


def test_ready_plus_unacked_over_the_group_queues():
    lengths = {"celery": QueueLength(7, 3), "mail": QueueLength(0, 2), "other": QueueLength(99, 0)}
    assert lengths["celery"].total == 10
    assert group_total(lengths, ["celery", "mail"]) == 12
    assert group_total(lengths, ["missing"]) == 0


@pytest.mark.parametrize(("total", "pods", "target"), [(120, 3, 10), (5, 4, 10), (0, 2, 10),
                                                       (1000, 1, 30)])
def test_per_pod_share_makes_the_hpa_want_total_over_target(total, pods, target):
    values = per_pod_values(total, [f"pod-{i}" for i in range(pods)])
    assert len(values) == pods
    average = sum(values.values()) / len(values)
    # The HPA's Pods/AverageValue rule: desired = ceil(current * average / target).
    assert math.ceil(pods * average / target - 1e-9) == math.ceil(total / target)


def test_no_pods_no_values():
    assert per_pod_values(50, []) == {}


def test_hold_last_on_a_broker_outage_and_forget_removed_groups():
    hold = HoldLast()
    assert hold.update("default", None).total is None  # nothing known yet: serve nothing
    assert hold.update("default", 40).total == 40
    held = hold.update("default", None)
    assert (held.total, held.held) == (40, True)  # an outage never reads as an empty queue
    assert hold.update("default", 0).total == 0  # a real drain does
    hold.update("reports", 5)
    hold.forget_except(["default"])
    assert "reports" not in hold.last


def test_redis_keys_follow_kombu_priority_lists():
    assert redis_queue_keys("celery") == [
        "celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]
    from kombu.transport.redis import Channel

    # The constants are kombu's own.
    assert Channel.sep == "\x06\x16" and Channel.unacked_key == "unacked"


def test_redis_unacked_counted_by_routing_key():
    entries = [json.dumps([{"body": "..."}, "", q]) for q in ("celery", "celery", "mail", "x")]
    entries.append("not json")
    assert redis_unacked_by_queue(entries, ["celery", "mail"]) == {"celery": 2, "mail": 1}


@pytest.mark.parametrize(("url", "vhost"), [
    ("amqp://u:p@rabbit:5672//", "/"),
    ("amqp://u:p@rabbit:5672/", "/"),
    ("amqp://u:p@rabbit", "/"),
    ("amqp://u:p@rabbit:5672/shop", "shop"),
    ("amqps://u:p@rabbit/shop%2Fprod", "shop/prod"),
])
def test_rabbitmq_vhost_as_kombu_reads_it(url, vhost):
    assert rabbitmq_vhost(url) == vhost


def test_rabbitmq_queue_url_quotes_vhost_and_queue_and_keeps_a_path_prefix():
    reader = RabbitMQReader("https://ops:pw@rabbit.internal:15671/rabbitmq/", "amqp://h//")
    assert reader.queue_url("celery") == (
        "https://rabbit.internal:15671/rabbitmq/api/queues/%2F/celery")
    assert (reader.user, reader.password) == ("ops", "pw")
    other = RabbitMQReader("http://rabbit:15672", "amqp://h/shop")
    assert other.queue_url("a b") == "http://rabbit:15672/api/queues/shop/a%20b"


def test_reader_for_each_broker_type():
    assert isinstance(reader_for("redis", "redis://r:6379/0", None), RedisReader)
    assert isinstance(reader_for("rabbitmq", "amqp://h//", "http://h:15672"), RabbitMQReader)
    with pytest.raises(ValueError, match="managementUrl"):
        reader_for("rabbitmq", "amqp://h//", None)


def parse_worker(argv):
    parser = argparse.ArgumentParser()
    worker.configure(parser)
    return parser.parse_args(argv)


def test_worker_command_line_defaults_are_the_safe_ones():
    args = parse_worker(["-A", "shop.celery"])
    assert (args.pool, args.prefetch_multiplier, args.optimization, args.acks_late) == (
        "threads", 1, "fair", True)
    argv = worker.celery_worker_argv(parse_worker(
        ["-A", "shop", "--pool", "threads", "--concurrency", "16", "--queues", "a,b",
         "--no-acks-late", "--", "--max-tasks-per-child", "100"]))
    assert argv[:11] == ["worker", "--pool", "threads", "--concurrency", "16",
                         "--prefetch-multiplier", "1", "-O", "fair", "--queues", "a,b"]
    assert "--without-gossip" in argv and argv[-2:] == ["--max-tasks-per-child", "100"]
    assert parse_worker(["-A", "x", "--no-acks-late"]).acks_late is False


def test_worker_does_not_import_kopf():
    import subprocess
    import sys

    code = ("import sys, djangoscale.cli as c; p = c.build_parser(['worker']); "
            "assert 'kopf' not in sys.modules and 'kubernetes' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_health_answers_only_while_the_consumer_ticks():
    health = worker.Health()
    server = worker.serve_health("127.0.0.1:0", health)
    port = server.server_address[1]

    def status() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    try:
        assert status() == 503  # not started yet
        health.tick()
        assert status() == 200
        assert not health.alive(now=time.monotonic() + worker.STALE_AFTER + 1)
    finally:
        server.shutdown()
        server.server_close()
