"""The MLLP listener: HL7 v2 over TCP (Minimal Lower Layer Protocol, HL7 v2.5.1 appendix C).

Each message travels in a block ``0x0B`` … ``0x1C 0x0D``. The listener runs an asyncio server on
its own thread and event loop; each connection's messages are handled in order in a worker
thread, and an ACK is written only once its handler returned — for an accepted message, after
its unit of work committed.

Group commit: a sender may pipeline (send the next messages before the ACKs come back). Every
complete block already received is taken at once, and up to ``max_group`` consecutive messages go
to ``batch_handler`` together (``Hl7Service.handle_many``: one unit of work, one durable commit);
their ACKs are then written in order. A sender that waits for each ACK before the next message
(MLLP's original mode) gets groups of one: its rate is bounded by one commit's latency.

Refused framing, each answered so the sender is never left waiting:

- bytes outside a block (other than CR/LF between blocks): an AR ACK, and the stray bytes are
  skipped up to the next ``0x0B``;
- a block larger than ``max_message_bytes``: an AR ACK, then the connection is closed (the rest of
  that block cannot be told from the next message);
- ``0x1C`` not followed by ``0x0D``: an AR ACK for that block;
- a connection idle for ``idle_timeout`` seconds, or a block not finished within it, is closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from node import hl7v2
from node.hl7v2 import Header

log = logging.getLogger(__name__)

Handler = Callable[[bytes], bytes]
"""One unframed message in, one unframed ACK out (blocking; runs in a worker thread)."""
BatchHandler = Callable[[list[bytes]], list[bytes]]
"""Pipelined messages in, their ACKs out in the same order (one group commit)."""

_START = 0x0B
_END = 0x1C
_CR = 0x0D
_READ_BYTES = 64 * 1024


def _reject(text: str, code: str) -> bytes:
    return hl7v2.frame(hl7v2.ack(Header(), "AR", text, error_code=code))


_TOO_LARGE = _reject("message larger than the MLLP limit", "mllp_too_large")


class MllpListener:
    """An MLLP server on ``host:port`` (port 0: a free port, see ``port`` once started)."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 16 * 1024 * 1024,
        idle_timeout: float = 300.0,
        max_connections: int = 64,
        batch_handler: BatchHandler | None = None,
        max_group: int = 200,
    ) -> None:
        self.handler = handler
        self.batch_handler = batch_handler
        self.max_group = max_group
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.messages = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve on a background thread; returns once the port is bound."""
        if self._thread is not None:
            return
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="mllp", daemon=True)
        self._thread.start()
        ready.result(timeout)
        log.info("MLLP listener on %s:%d", self.host, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close open connections, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port, limit=_READ_BYTES)
            )
        except OSError as exc:
            ready.set_exception(exc)
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    # -- one connection ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections:
            writer.close()
            return
        if task is not None:
            self._connections.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        while True:
            items = self._blocks(buffer)
            if not items:
                chunk = await self._read(reader)
                if not chunk:
                    return  # closed or idle (a block never finished goes with it)
                buffer.extend(chunk)
                continue
            pending: list[bytes] = []
            for kind, data in items:
                if kind == "message":
                    pending.append(data)
                    if len(pending) < self.max_group:
                        continue
                if pending:  # the group so far, committed and answered before what follows
                    replies = await loop.run_in_executor(None, self._handle_many, pending)
                    writer.writelines(hl7v2.frame(reply) for reply in replies)
                    pending = []
                if kind != "message":
                    writer.write(data)
                if kind == "close":
                    await writer.drain()
                    return
            if pending:
                replies = await loop.run_in_executor(None, self._handle_many, pending)
                writer.writelines(hl7v2.frame(reply) for reply in replies)
            await writer.drain()

    def _blocks(self, buffer: bytearray) -> list[tuple[str, bytes]]:
        """Take every complete block off ``buffer``: ``("message", body)``, ``("reply", AR)``
        for a framing error, ``("close", AR)`` for an over-large block (then nothing more)."""
        items: list[tuple[str, bytes]] = []
        while True:
            # Between blocks: skip CR/LF; anything else before 0x0B is refused.
            stray = 0
            while stray < len(buffer) and buffer[stray] != _START:
                stray += 1
            junk = bytes(buffer[:stray]).strip(b"\r\n")
            del buffer[:stray]
            if junk:
                items.append(("reply", _reject("bytes outside an MLLP block", "mllp_framing")))
            if not buffer:
                return items
            end = buffer.find(bytes([_END]))
            if end < 0:
                if len(buffer) - 1 > self.max_message_bytes:
                    items.append(("close", _TOO_LARGE))
                return items
            if len(buffer) < end + 2:
                return items
            message = bytes(buffer[1:end])
            terminated = buffer[end + 1] == _CR
            del buffer[: end + 2]  # a bad trailer byte goes with its block
            if len(message) > self.max_message_bytes:
                items.append(("close", _TOO_LARGE))
                return items
            if not terminated:
                items.append(("reply", _reject("0x1C not followed by 0x0D", "mllp_framing")))
            else:
                items.append(("message", message))

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.read(_READ_BYTES), self.idle_timeout)
        except TimeoutError:
            return b""

    def _handle_many(self, messages: list[bytes]) -> list[bytes]:
        if self.batch_handler is None or len(messages) == 1:
            return [self._handle(message) for message in messages]
        self.messages += len(messages)
        try:
            return self.batch_handler(messages)
        except Exception as exc:  # the handler answers every message; this is a last resort
            log.error("MLLP group handler failed (%s)", type(exc).__name__, exc_info=exc)
            return [
                hl7v2.ack(
                    hl7v2.header_of(message), "AE", "internal error; resend", error_code="internal"
                )
                for message in messages
            ]

    def _handle(self, message: bytes) -> bytes:
        self.messages += 1
        try:
            return self.handler(message)
        except Exception as exc:  # the handler answers every message; this is a last resort
            log.error("MLLP handler failed (%s)", type(exc).__name__, exc_info=exc)
            return hl7v2.ack(
                hl7v2.header_of(message), "AE", "internal error; resend", error_code="internal"
            )
