"""HTTP plumbing shared by the platform connectors: a session wrapper that maps
transport failures and error statuses to SourceErrors, and a line reader for
long-lived streaming responses (SSE, newline-delimited JSON)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from connectors.base import SourceError
from connectors.common import Clock, status_error, transport_error

# ----------------------------------------------------------------- http client


class HttpClient:
    """One aiohttp session per source, created lazily in the running loop."""

    def __init__(
        self,
        where: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        user_agent: str,
        clock: Clock,
    ) -> None:
        self.where = where
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.user_agent = user_agent
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s
                ),
                headers={"User-Agent": self.user_agent},
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Do one request and read the body; non-``ok`` statuses raise via ``status_error``."""
        where = f"{self.where}: {method} {url}"
        try:
            async with self.session().request(method, url, **kwargs) as resp:
                body = await resp.read()
                headers = dict(resp.headers)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(where, exc) from exc
        if status not in ok:
            raise status_error(status, where, headers, body, self.clock())
        return status, headers, body

    async def get_json(
        self, url: str, *, method: str = "GET", **kwargs: Any
    ) -> tuple[Mapping[str, str], Any]:
        """Request ``url`` (GET by default) and decode its JSON body."""
        _, headers, body = await self.request(method, url, **kwargs)
        return headers, parse_json(body, f"{self.where}: {method} {url}")

    async def open_stream(
        self, url: str, *, stall_timeout_s: float, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """Open a long-lived GET; the caller reads ``resp.content`` and must close it.

        ``stall_timeout_s``: no byte (not even a heartbeat) for this long breaks the
        stream with a timeout error.
        """
        where = f"{self.where}: GET {url}"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=stall_timeout_s
        )
        try:
            resp = await self.session().get(url, timeout=timeout, **kwargs)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(where, exc) from exc
        if resp.status != 200:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                resp.release()
            raise status_error(resp.status, where, dict(resp.headers), body, self.clock())
        return resp

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def parse_json(body: bytes, where: str) -> Any:
    """Decode a whole JSON response body; a broken one is a retriable protocol error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg = f"{where}: response is not JSON ({exc}); starts {body[:80]!r}"
        raise SourceError(msg, kind="protocol") from None


class StreamEnded(Exception):
    """The server closed a long-lived response (not an error of ours)."""


class LineReader:
    """Reads lines from a streaming aiohttp response with per-call deadlines.

    Uses ``readany`` into its own buffer, so a timeout never loses a partial line
    (``StreamReader.readline`` drops what it read when cancelled).
    """

    def __init__(self, resp: aiohttp.ClientResponse, *, max_line_bytes: int = 4_000_000) -> None:
        self.resp = resp
        self._buf = bytearray()
        self.max_line_bytes = max_line_bytes

    async def readline(self, timeout_s: float) -> bytes | None:
        """The next line without its end-of-line; None when ``timeout_s`` passes first.

        Raises StreamEnded at the end of the response, aiohttp.ClientError when the
        connection breaks.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            idx = self._buf.find(b"\n")
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > self.max_line_bytes:
                msg = f"a streamed line is longer than {self.max_line_bytes} bytes"
                raise SourceError(msg, kind="protocol")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                chunk = await asyncio.wait_for(self.resp.content.readany(), remaining)
            except aiohttp.ServerTimeoutError:
                raise  # the stall timeout (sock_read): the stream is dead
            except TimeoutError:
                return None
            if not chunk:
                raise StreamEnded
            self._buf += chunk

    def close(self) -> None:
        self.resp.close()

    async def lines(self, wait_s: float) -> AsyncIterator[bytes]:
        """Lines arriving within ``wait_s`` seconds (the caller may stop early)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (remaining := deadline - loop.time()) > 0:
            line = await self.readline(remaining)
            if line is None:
                return
            yield line
