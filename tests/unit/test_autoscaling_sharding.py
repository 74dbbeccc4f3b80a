"""Sharded collection: who reads which pod, what moves when a peer comes or goes, the samples
the replicas exchange, and windows merged from both replicas' reads of real endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from djangoscale import spec
from djangoscale.autoscaling.collector import PodTarget, Scraper, collect
from djangoscale.autoscaling.sharding import (
    PEER_READ_INTERVALS,
    SHARD_READ_PATH,
    SIGNATURE_HEADER,
    SIGNATURE_MAX_AGE_SECONDS,
    Assignment,
    ShardReader,
    Shards,
    ShareOfService,
    build_shard_app,
    decode_samples,
    decode_work,
    encode_samples,
    encode_work,
    owner_of,
    shard_key,
    sign,
    verify,
)
from djangoscale.autoscaling.windows import ServiceWindows
from djangoscale.pod_figures import FIGURES_CONTENT_TYPE, FIGURES_PATH, PodScrape
from djangoscale.serve.metrics import pod_figures_of

UIDS = [f"0c8f{i:08d}-uid" for i in range(6000)]


def shares(assignment: Assignment) -> dict[str, int]:
    counted = dict.fromkeys(assignment.peers, 0)
    for uid in UIDS:
        counted[assignment.owner(uid)] += 1
    return counted


def test_every_peer_reads_about_an_equal_share():
    two = shares(Assignment.of(["djangoscale-0", "djangoscale-1"]))
    assert sum(two.values()) == 6000
    assert all(2700 <= n <= 3300 for n in two.values()), two
    three = shares(Assignment.of(["djangoscale-0", "djangoscale-1", "djangoscale-2"]))
    assert all(1800 <= n <= 2200 for n in three.values()), three


def test_the_owner_is_the_same_whatever_the_order_the_peers_are_listed_in():
    assert all(owner_of(uid, ["a", "b", "c"]) == owner_of(uid, ["c", "a", "b"])
               for uid in UIDS[:500])
    with pytest.raises(ValueError, match="no live peer"):
        owner_of("uid", [])


def test_a_peer_leaving_moves_only_its_own_pods_and_joining_takes_only_new_ones():
    two = Assignment.of(["djangoscale-0", "djangoscale-1"])
    three = Assignment.of(["djangoscale-0", "djangoscale-1", "djangoscale-2"])
    moved = [uid for uid in UIDS if two.owner(uid) != three.owner(uid)]
    assert all(three.owner(uid) == "djangoscale-2" for uid in moved)  # to the newcomer only
    assert 1800 <= len(moved) <= 2200  # about a third, not a reshuffle
    back = three.without(["djangoscale-2"])
    assert all(back.owner(uid) == two.owner(uid) for uid in UIDS)


def test_a_peer_that_did_not_answer_is_left_out_and_the_assignment_kept_otherwise():
    shards = Shards("djangoscale-0")
    first = shards.update(["djangoscale-0", "djangoscale-1"])
    assert shards.update(["djangoscale-1", "djangoscale-0"]) is first  # owners kept
    alone = shards.update(["djangoscale-0", "djangoscale-1"], unreachable=["djangoscale-1"])
    assert alone.peers == ("djangoscale-0",)
    assert all(alone.owns("djangoscale-0", uid) for uid in UIDS[:100])
    # This replica never leaves its own assignment, even when named unreachable.
    assert shards.update([], unreachable=["djangoscale-0"]).peers == ("djangoscale-0",)


def test_samples_cross_to_a_peer_on_its_own_clock():
    scrape = PodScrape(42.0, server_connections=3, queue_bounds=(0.1, float("inf")),
                       queue_counts=(1.0, 4.0))
    # Read at monotonic 100 on a replica whose wall clock says 1000 at monotonic 110.
    payload = encode_samples({("web", "shop"): {"shop-a": (100.0, scrape)}}, now=110.0,
                             wall=1000.0)
    # The peer's monotonic clock says 50 at wall 1001: the read was 11 s ago there too.
    decoded = decode_samples(payload, now=50.0, wall=1001.0)
    assert decoded == {("web", "shop"): {"shop-a": (39.0, scrape)}}


@pytest.mark.parametrize(("payload", "says"), [
    (b"[]", "not an object"),
    (b'{"shop": {}}', "'shop' is not namespace/name"),
    (b'{"web/shop": []}', "does not map pods"),
    (b'{"web/shop": {"shop-a": [1]}}', "web/shop/shop-a is not"),
    (b'{"web/shop": {"shop-a": [1, {"busy_seconds": 1}]}}', "requests_total"),
])
def test_malformed_samples_are_refused_naming_what(payload, says):
    with pytest.raises(ValueError, match=says):
        decode_samples(payload)


# -- two replicas reading real endpoints -------------------------------------------------------

HOSTS = [f"127.0.3.{i}" for i in range(1, 9)]


class Pods:
    """Eight launcher-like endpoints serving the compact figures of their own counters."""

    def __init__(self) -> None:
        self.counters = {}
        self.registries = {}
        self.reads = 0
        for host in HOSTS:
            registry = CollectorRegistry()
            self.registries[host] = registry
            self.counters[host] = Counter("djangoscale_requests", "r", registry=registry)

    async def figures(self, request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname")[0]  # type: ignore[union-attr]
        self.reads += 1
        return web.Response(body=pod_figures_of(self.registries[host]),
                            content_type=FIGURES_CONTENT_TYPE)

    def serve(self, seconds: float, rps: float) -> None:
        for counter in self.counters.values():
            counter.inc(seconds * rps)


@pytest_asyncio.fixture(loop_scope="function")
async def pods() -> AsyncIterator[tuple[Pods, int]]:
    served = Pods()
    app = web.Application()
    app.router.add_get(FIGURES_PATH, served.figures)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    for host in HOSTS:
        await web.TCPSite(runner, host, port).start()
    yield served, port
    await runner.cleanup()


def shop(port: int) -> spec.DjangoService:
    return spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 2, "max": 10}, "metricsPort": port,
                 "autoscaling": {"targetRPSPerPod": 20, "stableWindowSeconds": 12,
                                 "panicWindowSeconds": 6}},
    })


async def test_two_replicas_merge_to_what_one_replica_reads_and_a_leaving_peer_leaves_no_gap(
        pods: tuple[Pods, int]) -> None:
    served, port = pods
    ds = shop(port)
    targets = [PodTarget(f"shop-{i}", host, True, uid=f"uid-{i}")
               for i, host in enumerate(HOSTS)]
    both = Assignment.of(["djangoscale-0", "djangoscale-1"])
    assert 0 < sum(both.owns("djangoscale-0", p.shard_key) for p in targets) < len(targets)
    alone, merged = ServiceWindows(), {"djangoscale-0": ServiceWindows(),
                                       "djangoscale-1": ServiceWindows()}
    scraper = Scraper(timeout=1.0)
    values: list[dict[str, float]] = []
    try:
        for step in range(10):
            t = 2.0 * step
            # One replica reading everything: what the merge must equal.
            single = await collect(ds, targets, alone, scraper, now=t)
            # Two replicas, each reading its share, then taking the other's reads. From step
            # 6 on, djangoscale-1 is gone: djangoscale-0 reads every pod itself.
            assignment = both if step < 6 else both.without(["djangoscale-1"])
            live = [peer for peer in merged if peer in assignment.peers]
            reads = {}
            for peer in live:
                reading = await collect(
                    ds, targets, ServiceWindows(), scraper, now=t,
                    mine=lambda pod, peer=peer, shares=assignment: shares.owns(
                        peer, pod.shard_key))
                reads[peer] = reading.samples
            for peer in live:
                others = {pod: sample for other, samples in reads.items() if other != peer
                          for pod, sample in samples.items()}
                reading = await collect(ds, targets, merged[peer], scraper, now=t,
                                        mine=lambda pod: False, remote={**others,
                                                                         **reads[peer]})
                assert not reading.failed
                assert reading.decision.per_pod.keys() == single.decision.per_pod.keys()
                for pod, value in single.decision.per_pod.items():
                    assert reading.decision.per_pod[pod] == pytest.approx(value)
            if step >= 1:
                values.append(merged["djangoscale-0"].rates()["shop-0"].__dict__)
            served.serve(2.0, rps=5.0)
    finally:
        await scraper.close()
    # 5 RPS per pod throughout: no dip at the move (the counter series simply continues).
    assert all(v["panic"] == pytest.approx(5.0) for v in values)


async def start_peer(scraper: Scraper, key_file: Path) -> tuple[web.AppRunner, str]:
    """A peer's reading endpoint on a free loopback port, and the URL the active peer posts to."""
    runner = web.AppRunner(build_shard_app(scraper, key_file))
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}{SHARD_READ_PATH}"


async def test_a_peer_reads_the_share_it_is_sent_and_a_gone_peer_is_read_for(
        pods: tuple[Pods, int], key_file: Path) -> None:
    served, port = pods
    served.serve(10.0, rps=3.0)
    peer_scraper, scraper = Scraper(timeout=1.0), Scraper(timeout=1.0)
    runner, url = await start_peer(peer_scraper, key_file)
    work = {("web", "shop"): ShareOfService(port, tuple(
        (f"shop-{i}", host) for i, host in enumerate(HOSTS[:3])))}
    reader = ShardReader("djangoscale-0", scraper, timeout=4.0, key_file=key_file,
                         retry_seconds=30.0)
    try:
        before = time.monotonic()
        read = await reader.read("djangoscale-1", url, work)
        assert sorted(read[("web", "shop")]) == ["shop-0", "shop-1", "shop-2"]
        t, scrape = read[("web", "shop")]["shop-1"]
        assert scrape.requests_total == 30.0
        assert before - 0.5 <= t <= time.monotonic() + 0.5  # on this replica's clock
        assert reader.assignment(["djangoscale-0", "djangoscale-1"]).peers == (
            "djangoscale-0", "djangoscale-1")
        read_here = read_for("djangoscale-1")
        await runner.cleanup()  # the peer goes
        read = await reader.read("djangoscale-1", url, work)
        assert read_for("djangoscale-1") - read_here == 3.0  # its 3 pods, read here
        assert read[("web", "shop")]["shop-2"][1].requests_total == 30.0  # read here instead
        assert reader.assignment(["djangoscale-0", "djangoscale-1"]).peers == ("djangoscale-0",)
        later = time.monotonic() + 31.0
        assert reader.assignment(["djangoscale-0", "djangoscale-1"], now=later).peers == (
            "djangoscale-0", "djangoscale-1")  # tried again after a while
    finally:
        await runner.cleanup()
        await scraper.close()
        await peer_scraper.close()


def test_work_for_a_peer_round_trips_and_bad_work_is_refused_naming_the_field():
    work = {("web", "shop"): ShareOfService(8000, (("shop-a", "10.0.0.1"),))}
    assert decode_work(encode_work(work)) == work
    with pytest.raises(ValueError, match="port 0 is not a TCP port"):
        decode_work(b'{"web/shop": {"port": 0, "pods": []}}')
    with pytest.raises(ValueError, match="'pods'"):
        decode_work(b'{"web/shop": {"port": 80}}')
    with pytest.raises(ValueError, match="'shop' is not namespace/name"):
        decode_work(b'{"shop": {"port": 80, "pods": []}}')


class RecordingScraper(Scraper):
    """A real scraper that remembers which pods it read."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0)
        self.read: list[str] = []

    async def pod_scrape(self, ip: str, port: int) -> PodScrape | None:
        self.read.append(ip)
        return await super().pod_scrape(ip, port)


async def test_the_active_replica_sends_the_peer_its_share_and_serves_every_pod(
        pods: tuple[Pods, int], key_file: Path) -> None:
    from djangoscale.autoscaling.handlers import RpsCollection
    from djangoscale.context import OperatorContext
    from djangoscale.settings import OperatorSettings

    served, port = pods
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        shard_port = int(sock.getsockname()[1])

    class Context(OperatorContext):
        async def live_peer_names(self) -> list[str]:
            return ["djangoscale-0", "djangoscale-1"]

        async def peer_ip(self, pod_name: str) -> str | None:
            return "127.0.0.1"

    class Api:
        def patch_status(self, *_: object) -> None:
            return None

    context = Context.create(OperatorSettings(shard_port=shard_port), Api())  # type: ignore[arg-type]
    mine, peers = RecordingScraper(), RecordingScraper()
    context.scraper = mine
    runner = web.AppRunner(build_shard_app(peers, key_file))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", shard_port).start()
    body = {"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
            "metadata": {"name": "shop", "namespace": "web", "resourceVersion": "1"},
            "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                     "replicas": {"min": 2, "max": 10}, "metricsPort": port,
                     "autoscaling": {"targetRPSPerPod": 20}}}
    targets = [PodTarget(f"shop-{i}", host, True, uid=f"uid-{i}")
               for i, host in enumerate(HOSTS)]
    reader = ShardReader("djangoscale-0", mine, timeout=4.0, key_file=key_file)
    read_before = read_by_peers()
    rounds_before = collection_rounds()
    collection = RpsCollection(context, {("web", "shop"): [body]},  # type: ignore[arg-type]
                               {("web", "shop"): targets}, {}, reader)
    try:
        await collection.round()
        served.serve(2.0, rps=5.0)
        await asyncio.sleep(0.2)
        await collection.round()
    finally:
        await runner.cleanup()
        await mine.close()
        await peers.close()
    owners = Assignment.of(["djangoscale-0", "djangoscale-1"])
    theirs = {p.ip for p in targets if owners.owner(p.shard_key) == "djangoscale-1"}
    assert theirs and set(peers.read) == theirs  # the peer read its share, and only it
    assert set(mine.read) == {p.ip for p in targets} - theirs
    values = {value.pod: value.value for value, _ in context.rps.pods("web")}
    assert sorted(values) == sorted(p.name for p in targets)  # every pod served
    assert all(v > 0 for v in values.values())
    # The operator's metrics show the split, and the peer's two rounds of reads.
    assert assigned_pods("djangoscale-1") == len(theirs)
    assert assigned_pods("djangoscale-0") == len(targets) - len(theirs)
    assert read_by_peers() - read_before == 2 * len(theirs)
    assert collection_rounds() - rounds_before == 2  # each round timed, for choosing shards
    collection.publish_assignment({"djangoscale-0": len(targets)})  # the peer left
    assert assigned_pods("djangoscale-1") is None
    assert assigned_pods("djangoscale-0") == len(targets)


def assigned_pods(peer: str) -> float | None:
    return REGISTRY.get_sample_value("djangoscale_operator_shard_assigned_pods", {"peer": peer})


def read_by_peers() -> float:
    return REGISTRY.get_sample_value("djangoscale_operator_shard_pods_read_total") or 0.0


def collection_rounds() -> float:
    return REGISTRY.get_sample_value("djangoscale_operator_collection_round_seconds_count") or 0.0


def read_for(peer: str) -> float:
    return REGISTRY.get_sample_value("djangoscale_operator_shard_pods_read_for_peer_total",
                                     {"peer": peer}) or 0.0


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """The metrics API's private key as every replica has it (any bytes do for the HMAC)."""
    path = tmp_path / "tls.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    return path


def test_a_signature_holds_for_its_key_body_and_time_only(key_file: Path) -> None:
    key, body = shard_key(key_file), b'{"web/shop": {}}'
    signature = sign(key, body, now=1000.0)
    assert verify(key, body, signature, now=1000.0)
    assert verify(key, body, signature, now=1000.0 + SIGNATURE_MAX_AGE_SECONDS)
    assert not verify(key, body, signature, now=1001.0 + SIGNATURE_MAX_AGE_SECONDS)  # stale
    assert not verify(key, body + b" ", signature, now=1000.0)  # another body
    assert not verify(hashlib.sha256(b"another key").digest(), body, signature, now=1000.0)
    forged = signature.replace("t=1000", "t=1010")  # a fresher time on the old MAC
    assert not verify(key, body, forged, now=1010.0)
    for garbage in (None, "", "t=1000", "sig=00", "t=x,sig=00", "nonsense"):
        assert not verify(key, body, garbage, now=1000.0)


async def test_a_replica_reads_nothing_for_a_request_it_cannot_verify(
        pods: tuple[Pods, int], key_file: Path, tmp_path: Path) -> None:
    served, port = pods
    served.serve(10.0, rps=3.0)
    peer_scraper = Scraper(timeout=1.0)
    runner, url = await start_peer(peer_scraper, key_file)
    body = encode_work({("web", "shop"): ShareOfService(port, (("shop-0", HOSTS[0]),))})
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"somebody else's key")
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {SIGNATURE_HEADER: sign(shard_key(other_key), body)},
                            {SIGNATURE_HEADER: sign(shard_key(key_file), body,
                                                    now=time.time() - 60)}):
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 401
            assert served.reads == 0  # no pod was read for them
            headers = {SIGNATURE_HEADER: sign(shard_key(key_file), body)}
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200
            assert served.reads == 1
    finally:
        await runner.cleanup()
        await peer_scraper.close()


def test_an_assignment_forgets_the_owners_of_pods_gone_and_keeps_the_others() -> None:
    assignment = Assignment.of(["djangoscale-0", "djangoscale-1"])
    owners = {f"uid-{i}": assignment.owner(f"uid-{i}") for i in range(100)}
    assignment.retain(f"uid-{i}" for i in range(10))
    assert sorted(assignment._owners) == sorted(f"uid-{i}" for i in range(10))
    # An owner forgotten is computed again, the same.
    assert all(assignment.owner(key) == owner for key, owner in owners.items())


def test_the_metrics_api_outlasts_a_round_that_waits_the_whole_peer_timeout() -> None:
    """A frozen peer holds the active replica's round for PEER_READ_INTERVALS intervals (then
    it reads the share itself, then sleeps an interval): the metrics API must not call itself
    a standby (503) meanwhile, as it did on the real node for 2.6 s."""
    from djangoscale.autoscaling.handlers import ready_max_age
    from djangoscale.settings import OperatorSettings

    sharded = OperatorSettings(scrape_interval=2.0, shard_port=8082)
    longest_round_gap = (PEER_READ_INTERVALS + 1) * sharded.scrape_interval
    assert ready_max_age(sharded) > longest_round_gap
    alone = OperatorSettings(scrape_interval=2.0, shard_port=-1)
    assert ready_max_age(alone) == 10.0  # a takeover is not held back without sharding
