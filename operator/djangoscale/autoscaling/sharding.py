"""Sharded collection: every live operator replica reads a share of the pods, and every replica
keeps the windows of all of them.

Who reads a pod: rendezvous hashing of the pod's UID over the live peers (kopf's peering
records). Each replica computes the same owner for every pod without talking to the others,
and when a peer joins or leaves only the pods that peer gains or loses move (1/n of them).

How the shares meet: each replica serves the figures it read in its last round
(`encode_samples`) and pulls the others' (`decode_samples`); every replica feeds all of them
into its windows, keyed by pod. The launcher's counters are cumulative, so a pod read by another
replica from one round to the next continues the same series: an ownership move leaves no gap
in any window. Only the active peer serves the metrics API and writes status, but a standby's
windows are as full as the active peer's, so a takeover starts from full windows.

A peer that does not answer a pull is left out of the assignment for that round
(`Assignment.without`): its pods are read by the others at once, long before kopf's peering
record of it expires.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from djangoscale.pod_figures import PodScrape, decode_figures

# The path on which a replica serves the figures it read in its last round.
SHARD_SAMPLES_PATH: Final = "/djangoscale/shard-samples"

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
    """One replica's last reads, for its peers: times as wall-clock seconds (the peers'
    monotonic clocks share no origin), keyed by "namespace/name"."""
    mono = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    payload = {
        f"{namespace}/{name}": {
            pod: [wall - (mono - t), asdict(scrape)] for pod, (t, scrape) in pods.items()}
        for (namespace, name), pods in samples.items()
    }
    return json.dumps(payload, separators=(",", ":")).encode()


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
        namespace, _, name = str(service).partition("/")
        if not name or not isinstance(pods, dict):
            raise ValueError(f"shard samples: {service!r} is not namespace/name with pods")
        samples: Samples = {}
        for pod, sample in pods.items():
            if not isinstance(sample, list) or len(sample) != 2:
                raise ValueError(f"shard samples: {service}/{pod} is not [time, figures]")
            samples[str(pod)] = (mono - (wall - float(sample[0])),
                                 decode_figures(json.dumps(sample[1])))
        found[(namespace, name)] = samples
    return found
