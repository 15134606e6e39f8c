"""A TCP proxy on 127.0.0.1 that delays what it forwards, and can stall: a slow or hung link, for benchmarks and tests.

:class:`DelayProxy` listens on a free port of 127.0.0.1 and forwards each connection to ``target`` (a port of
127.0.0.1), bytes both ways. Every piece of data it reads is written on ``latency`` seconds after it arrived (a
fixed one-way delay per direction, as a long link adds), never after the previous piece's write: the delay does not
limit throughput, so a bulk transfer is as fast as without the proxy once the first bytes are through. Round trips
cost ``2 * latency``. :meth:`DelayProxy.stall` stops forwarding (and reading) without closing any connection, as a
hung server or a broken middlebox does; :meth:`DelayProxy.resume` goes on where it stopped. The counters
(:attr:`DelayProxy.bytes_up`, :attr:`DelayProxy.bytes_down`, :attr:`DelayProxy.connections`) show that a client's
reads really went through it.

The proxy runs an asyncio event loop in a daemon thread between :meth:`DelayProxy.start` and :meth:`DelayProxy.close`
(or as a context manager). TLS passes through untouched (the server's certificate is for 127.0.0.1, whatever port).
Nothing happens on import.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

__all__ = ["DelayProxy"]

HOST = "127.0.0.1"
#: Bytes read at once from a socket.
READ_SIZE = 1 << 16


class DelayProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target`` with ``latency`` seconds added each way; a context manager.

    Args:
        target: the port connections are forwarded to.
        latency: seconds added to each direction (0: forwarded at once). May be changed while running; data
            already read keeps the delay it was read with.

    Attributes:
        port: where the proxy listens (set by :meth:`start`).
        bytes_up: bytes forwarded from clients to the target, over all connections.
        bytes_down: bytes forwarded from the target to clients.
        connections: connections accepted so far.
    """

    def __init__(self, target: int, *, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError(f"latency must not be negative, got {latency}")
        self.target = target
        self.latency = latency
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> DelayProxy:
        """Start listening (on a free port, :attr:`port`); returns self."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=f"delay-proxy-{self.target}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._server is None:
            raise RuntimeError(f"the delay proxy to port {self.target} did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def listen() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = await asyncio.start_server(self._connection, HOST, 0)
            self.port = int(self._server.sockets[0].getsockname()[1])

        try:
            loop.run_until_complete(listen())
        finally:
            ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def close(self) -> None:
        """Stop listening, close every connection and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(RuntimeError):  # the loop already ended
            asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- control -----------------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        """True between :meth:`stall` and :meth:`resume`."""
        return self._flowing is not None and not self._flowing.is_set()

    def stall(self) -> None:
        """Stop forwarding and reading, both ways, on every connection; connections stay open."""
        self._call(lambda: self._flowing.clear())

    def resume(self) -> None:
        """Forward again what was held and what comes next."""
        self._call(lambda: self._flowing.set())

    def _call(self, action) -> None:
        if self._loop is None or self._flowing is None:
            raise RuntimeError("the delay proxy is not running")
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (action(), done.set()))
        done.wait(10)

    # ---- forwarding --------------------------------------------------------------------------------

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, server_writer}
        try:
            await asyncio.gather(self._pump(client_reader, server_writer, up=True),
                                 self._pump(server_reader, client_writer, up=False))
        except asyncio.CancelledError:  # closing the proxy: the connection ends here, quietly
            pass
        finally:
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Read from ``reader`` and write each piece to ``writer`` at its arrival time plus the latency."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer, up=up))
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(READ_SIZE)
                queue.put_nowait((time.monotonic() + self.latency, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, *, up: bool) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            if not data:  # the other side closed its end: pass the end on
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            writer.write(data)
            await writer.drain()
