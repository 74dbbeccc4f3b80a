"""The pod reads' HTTP client: a fixed GET over one kept-alive connection per pod.

Once the figures were compact, aiohttp's client was the largest cost left per pod-read (its
request and response machinery: URL objects, tracing hooks, timers, the connector's
bookkeeping; docs/scale.md has the profile). A pod read is always the same request to a
launcher on a pod's address, answered with a Content-Length body, so this client does only
that, on asyncio's streams. Anything else (chunked bodies, redirects) is not a launcher's
answer and reads as a failure; a body without a length (an HTTP/1.0 server) is read to the end
of the connection, which is then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

# A response head larger than this is not a launcher's.
MAX_HEAD_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class PodResponse:
    status: int
    content_type: str  # without parameters (`; charset=...`)
    body: bytes


class PodHttpError(Exception):
    """The pod's answer could not be read as an HTTP response."""


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PodConnections:
    """Kept-alive connections to the pods, by (address, port); each used by one read at a
    time (a second read of the same pod at once opens a second connection)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[Stream]] = {}

    async def get(self, ip: str, port: int, path: str) -> PodResponse:
        """GET `path`; OSError, asyncio.IncompleteReadError or PodHttpError when it fails.
        A kept connection the pod closed meanwhile is retried once on a new one."""
        idle = self._idle.get((ip, port))
        if idle:
            stream = idle.pop()
            try:
                return await self._exchange(ip, port, path, stream)
            except (OSError, asyncio.IncompleteReadError):
                pass  # closed by the pod while idle: one new connection below
        stream = await asyncio.open_connection(ip, port, limit=MAX_HEAD_BYTES)
        return await self._exchange(ip, port, path, stream)

    async def _exchange(self, ip: str, port: int, path: str, stream: Stream) -> PodResponse:
        reader, writer = stream
        keep = False
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\n\r\n".encode("latin-1"))
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError as error:
                raise PodHttpError("response head too large") from error
            response, length, keep_alive = parse_head(head)
            if length is None:
                body = await reader.read()
            else:
                body = await reader.readexactly(length)
            keep = keep_alive  # only a connection that gave a whole answer is kept
            return PodResponse(response[0], response[1], body)
        finally:
            if keep:
                self._idle.setdefault((ip, port), []).append(stream)
            else:
                writer.close()

    async def close(self) -> None:
        streams = [stream for idle in self._idle.values() for stream in idle]
        self._idle.clear()
        for _, writer in streams:
            writer.close()
        for _, writer in streams:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def parse_head(head: bytes) -> tuple[tuple[int, str], int | None, bool]:
    """((status, content type), Content-Length or None, whether the connection stays open)
    from a response head; PodHttpError if it is not one this client reads."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise PodHttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise PodHttpError("chunked response: not a launcher's answer")
    length_text = headers.get("content-length")
    if length_text is not None and not length_text.isdigit():
        raise PodHttpError(f"bad Content-Length {length_text!r}")
    length = int(length_text) if length_text is not None else None
    keep = (parts[0] == "HTTP/1.1" and length is not None
            and headers.get("connection", "").lower() != "close")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return (int(parts[1]), content_type), length, keep
