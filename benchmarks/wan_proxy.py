"""A TCP proxy on loopback that gives every connection the upload bandwidth and round-trip time of a link to
remote object storage (B2, R2, S3 from a GPU cloud): the condition under which parallel uploads matter."""

from __future__ import annotations

import asyncio
import threading
import time


class WanProxy:
    """Forwards 127.0.0.1:<port> to an upstream address; client-to-server bytes are paced per connection."""

    def __init__(self, upstream_host: str, upstream_port: int, *, mbps: float, rtt_ms: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.bytes_per_s = mbps * 1024 * 1024
        self.rtt = rtt_ms / 1000
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wan-proxy", daemon=True)

    def __enter__(self) -> WanProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        # Closing every socket ends each connection's pumps with EOF, so no task is left to cancel.
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait(tasks, timeout=5) if tasks else None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.rtt)  # connection set-up
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer, paced=True), self._pump(up_reader, writer, paced=False),
                             return_exceptions=True)
        self._writers.difference_update((writer, up_writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, paced: bool) -> None:
        free_at = time.monotonic()  # when the link has sent everything handed to it so far
        try:
            while data := await reader.read(256 * 1024):
                if paced:
                    # Time a link is idle is not saved up: a connection kept open in a pool between
                    # uploads gets no burst above the link's bandwidth when it is used again.
                    now = time.monotonic()
                    free_at = max(free_at, now) + len(data) / self.bytes_per_s
                    if free_at > now:
                        await asyncio.sleep(free_at - now)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
