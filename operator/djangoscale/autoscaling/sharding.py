"""Sharded collection: every live operator replica reads a share of the pods; the active peer
merges them into the windows it keeps for every pod.

Who reads a pod: rendezvous hashing of the pod's UID over the live peers (kopf's peering
records). When a peer joins or leaves only the pods that peer gains or loses move (1/n of
them).

Why the active peer drives: kopf holds a standby's watches, so a standby's pod index is not
kept up to date and it cannot tell which pods exist. The active peer, whose index is, sends
each other live peer the pods of its share every round (`encode_work`, a POST to
`SHARD_READ_PATH`); the peer reads them as the active peer reads its own and answers with the
figures (`encode_samples`, times as wall-clock seconds, turned back into the active peer's
monotonic clock). The active peer feeds them into its windows, keyed by pod. The launcher's
counters are cumulative, so a pod read by another replica from one round to the next
continues the same series: an ownership move leaves no gap in any window.

A peer that does not answer is read for at once (its pods by the active peer, in the same
round) and left out of the assignment for `UNREACHABLE_RETRY_SECONDS`, long before kopf's
peering record of it expires. A standby holds no state: when it goes, nothing is lost; when
the active peer goes, the new one starts from the rates its status carried, as without
sharding.

Who may ask a replica to read: only a holder of the metrics API's private key, which the
chart's Secret gives every replica and nobody else. Each request is signed with an HMAC keyed
by a digest of that key over the body and the time (`sign`); a replica answers 401 to a
request unsigned, wrongly signed, or older than `SIGNATURE_MAX_AGE_SECONDS` (`verify`).
Without the key file (a certificate generated at start differs per replica) sharding stays
off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from djangoscale.autoscaling.collector import Scraper
from djangoscale.operator_metrics import SHARD_PODS_READ, SHARD_PODS_READ_FOR_PEER
from djangoscale.pod_figures import PodScrape, figures_dict, figures_from_dict

# The path on which a replica reads the pods the active peer sends it.
SHARD_READ_PATH: Final = "/djangoscale/shard-read"
# A peer that did not answer its share stays out of the assignment this long.
UNREACHABLE_RETRY_SECONDS: Final = 30.0
# How long the active peer waits for a peer's share, in scrape intervals: a loaded peer that
# answers late still saves the active peer the reads (were it cut at a read's timeout, the
# active peer would read the share again itself and the peer's work would be wasted); a peer
# that is gone refuses the connection at once.
PEER_READ_INTERVALS: Final = 5.0
# The header that carries a request's signature, "t=<unix seconds>,sig=<hex HMAC-SHA256>", and
# how far its time may be from the reader's clock (a replayed request reads the same pods
# again at most this long; the replicas' clocks are the nodes', kept in step by NTP).
SIGNATURE_HEADER: Final = "X-Djangoscale-Shard-Signature"
SIGNATURE_MAX_AGE_SECONDS: Final = 30.0

logger = logging.getLogger(__name__)

# (monotonic time of the read on the replica that keeps it, what the pod's launcher gave), by
# pod name: one DjangoService's samples.
Samples = dict[str, tuple[float, PodScrape]]


def rendezvous_weight(peer: str, key: str) -> int:
    """The peer's weight for one pod: the highest weight reads it (stable across processes,
    unlike Python's salted `hash`)."""
    digest = hashlib.blake2b(f"{peer}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(key: str, peers: Sequence[str]) -> str:
    """The peer that reads the pod `key` (its UID); ValueError with no peer."""
    if not peers:
        raise ValueError("no live peer to read pods")
    return max(peers, key=lambda peer: rendezvous_weight(peer, key))


@dataclass
class Assignment:
    """The owners of the pods for one set of live peers, computed once per pod."""

    peers: tuple[str, ...]
    _owners: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, peers: Iterable[str]) -> Assignment:
        return cls(tuple(sorted(set(peers))))

    def owner(self, key: str) -> str:
        found = self._owners.get(key)
        if found is None:
            found = self._owners[key] = owner_of(key, self.peers)
        return found

    def owns(self, peer: str, key: str) -> bool:
        return self.owner(key) == peer

    def retain(self, keys: Iterable[str]) -> None:
        """Forget the owners of pods no longer asked about (pods come and go; the peers, and
        so this assignment, may stay for weeks)."""
        keep = set(keys)
        self._owners = {key: owner for key, owner in self._owners.items() if key in keep}

    def without(self, gone: Iterable[str]) -> Assignment:
        """The same peers less those that did not answer (the same assignment if none)."""
        gone = set(gone) & set(self.peers)
        return self if not gone else Assignment.of(p for p in self.peers if p not in gone)


class Shards:
    """The assignment a replica uses, rebuilt only when the live peers change (so the owners
    computed for the pods are kept from round to round)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.assignment = Assignment.of([me])

    def update(self, live: Iterable[str], unreachable: Iterable[str] = ()) -> Assignment:
        peers = (set(live) | {self.me}) - (set(unreachable) - {self.me})
        if set(self.assignment.peers) != peers:
            self.assignment = Assignment.of(peers)
        return self.assignment


def encode_samples(samples: Mapping[tuple[str, str], Samples],
                   now: float | None = None, wall: float | None = None) -> bytes:
    """One replica's reads, for the active peer: times as wall-clock seconds (the peers'
    monotonic clocks share no origin), keyed by "namespace/name"."""
    mono = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    payload = {
        f"{namespace}/{name}": {
            pod: [wall - (mono - t), figures_dict(scrape)] for pod, (t, scrape) in pods.items()}
        for (namespace, name), pods in samples.items()
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _service_key(text: object) -> tuple[str, str]:
    namespace, _, name = str(text).partition("/")
    if not namespace or not name:
        raise ValueError(f"{text!r} is not namespace/name")
    return namespace, name


def decode_samples(payload: bytes | str, now: float | None = None,
                   wall: float | None = None) -> dict[tuple[str, str], Samples]:
    """A peer's reads on this replica's monotonic clock; ValueError naming what is wrong."""
    mono = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    data: Any = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("shard samples: not an object keyed by namespace/name")
    found: dict[tuple[str, str], Samples] = {}
    for service, pods in data.items():
        if not isinstance(pods, dict):
            raise ValueError(f"shard samples: {service!r} does not map pods to samples")
        samples: Samples = {}
        for pod, sample in pods.items():
            if not isinstance(sample, list) or len(sample) != 2:
                raise ValueError(f"shard samples: {service}/{pod} is not [time, figures]")
            samples[str(pod)] = (mono - (wall - float(sample[0])),
                                 figures_from_dict(sample[1]))
        try:
            found[_service_key(service)] = samples
        except ValueError as error:
            raise ValueError(f"shard samples: {error}") from error
    return found


@dataclass(frozen=True)
class ShareOfService:
    """The pods of one DjangoService a peer is to read: its metrics port, (name, IP) each."""

    port: int
    pods: tuple[tuple[str, str], ...]


Work = dict[tuple[str, str], ShareOfService]


def encode_work(work: Mapping[tuple[str, str], ShareOfService]) -> bytes:
    return json.dumps({f"{ns}/{name}": {"port": share.port, "pods": share.pods}
                       for (ns, name), share in work.items()}, separators=(",", ":")).encode()


def decode_work(payload: bytes | str) -> Work:
    """The pods to read, as the active peer sent them; ValueError naming what is wrong."""
    data: Any = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("shard work: not an object keyed by namespace/name")
    work: Work = {}
    for service, share in data.items():
        try:
            key = _service_key(service)
            port, pods = share["port"], share["pods"]
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"{service}: port {port!r} is not a TCP port")
            work[key] = ShareOfService(port, tuple((str(n), str(ip)) for n, ip in pods))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"shard work: {error}") from error
    return work


async def read_share(scraper: Scraper, work: Mapping[tuple[str, str], ShareOfService]
                     ) -> dict[tuple[str, str], Samples]:
    """Read every pod of `work` at once (the scraper bounds the sockets); each read stamped
    with the moment it came back. Pods that did not answer are left out."""

    async def one(ip: str, port: int) -> tuple[float, PodScrape | None]:
        scrape = await scraper.pod_scrape(ip, port)
        return time.monotonic(), scrape

    keys = [(service, pod, ip, share.port) for service, share in work.items()
            for pod, ip in share.pods]
    reads = await asyncio.gather(*(one(ip, port) for _, _, ip, port in keys))
    found: dict[tuple[str, str], Samples] = {service: {} for service in work}
    for (service, pod, _, _), (t, scrape) in zip(keys, reads, strict=True):
        if scrape is not None:
            found[service][pod] = (t, scrape)
    return found


def shard_key(key_file: Path) -> bytes:
    """The exchange's HMAC key: a digest of the metrics API's private key (read at each use,
    so a rotated Secret takes over once the kubelet has updated the file)."""
    return hashlib.sha256(b"djangoscale-shard:" + key_file.read_bytes()).digest()


def _mac(key: bytes, t: int, body: bytes) -> str:
    return hmac.new(key, f"{t}:".encode() + body, hashlib.sha256).hexdigest()


def sign(key: bytes, body: bytes, now: float | None = None) -> str:
    t = int(time.time() if now is None else now)
    return f"t={t},sig={_mac(key, t, body)}"


def verify(key: bytes, body: bytes, signature: str | None, now: float | None = None) -> bool:
    """Whether `signature` is `sign`'s for this key and body, made within the allowed age."""
    try:
        given = dict(part.split("=", 1) for part in (signature or "").split(","))
        t, mac = int(given["t"]), given["sig"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > SIGNATURE_MAX_AGE_SECONDS:
        return False
    return hmac.compare_digest(_mac(key, t, body), mac)


class ShardReader:
    """The active peer's side: the peers' shares read by them, or by itself when a peer does
    not answer (which then stays out of the assignment for a while)."""

    def __init__(self, me: str, scraper: Scraper, timeout: float, key_file: Path,
                 retry_seconds: float = UNREACHABLE_RETRY_SECONDS) -> None:
        self.shards = Shards(me)
        self.scraper = scraper
        self.key_file = key_file
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry_seconds = retry_seconds
        self.unreachable: dict[str, float] = {}  # peer -> until (monotonic)

    def assignment(self, live: Iterable[str], now: float | None = None) -> Assignment:
        t = time.monotonic() if now is None else now
        self.unreachable = {p: until for p, until in self.unreachable.items() if until > t}
        return self.shards.update(live, self.unreachable)

    async def read(self, peer: str, url: str, work: Work) -> dict[tuple[str, str], Samples]:
        """`work` read by `peer` at `url` (its SHARD_READ_PATH), or here if it fails."""
        if not work:
            return {}
        session = self.scraper.session
        body = encode_work(work)
        try:
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: sign(shard_key(self.key_file), body)}
            async with session.post(url, data=body, timeout=self.timeout,
                                    headers=headers) as response:
                if response.status == 200:
                    return decode_samples(await response.read())
                logger.warning("peer %s answered %s to its share; reading it here", peer,
                               response.status)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
            logger.warning("peer %s did not read its share (%s); reading it here", peer,
                           str(error) or type(error).__name__)
        self.unreachable[peer] = time.monotonic() + self.retry_seconds
        SHARD_PODS_READ_FOR_PEER.labels(peer).inc(sum(len(s.pods) for s in work.values()))
        return await read_share(self.scraper, work)


def build_shard_app(scraper: Scraper, key_file: Path) -> web.Application:
    """A replica's reading endpoint: POST the signed work, get the samples (no state kept)."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            signed = verify(shard_key(key_file), body, request.headers.get(SIGNATURE_HEADER))
        except OSError as error:
            logger.error("cannot check a share's signature: %s", error)
            return web.Response(status=503, text="cannot read the signing key")
        if not signed:
            return web.Response(status=401, text="unsigned, wrongly signed or stale request")
        try:
            work = decode_work(body)
        except ValueError as error:
            return web.Response(status=400, text=str(error))
        samples = await read_share(scraper, work)
        SHARD_PODS_READ.inc(sum(len(pods) for pods in samples.values()))
        return web.Response(body=encode_samples(samples), content_type="application/json")

    app = web.Application()
    app.router.add_post(SHARD_READ_PATH, handle)
    return app
