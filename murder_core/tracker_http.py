"""The tracker's HTTP/1.1 server: just enough HTTP for BitTorrent announces and scrapes.

A tracker's whole traffic is tiny ``GET`` requests on kept-alive
connections, and a fleet of 10,000 hosts sends thousands a second. A
general web framework spends most of its time per request in routing,
header objects and callbacks (Tornado answered about 1,700 announces a
second on one core here); this server parses the request line and the few
headers that matter straight from the socket buffer in an
``asyncio.Protocol`` and hands ``(path, query, peer address)`` to one
callback, which returns the body. ``make bench-tracker`` measures it.

What it accepts and refuses:

* ``GET`` on HTTP/1.0 and 1.1, pipelined or kept alive (1.1 unless
  ``Connection: close``; 1.0 only with ``Connection: keep-alive``);
* a request URI over ``max_uri`` bytes gets 414, a body announced over
  ``max_body`` bytes 400, and a header block over ``max_header`` bytes a
  closed connection; any other method gets 405, an unknown path 404,
  anything that does not parse as HTTP 400; each of those errors closes the
  connection, and the server keeps serving everyone else;
* a connection idle for ``idle_timeout`` seconds is closed.
"""
import asyncio
import logging
import time

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            414: b"URI Too Long", 500: b"Internal Server Error"}
# Seconds between the sweeps that close idle connections.
_SWEEP_SECONDS = 5.0


class HttpError(Exception):
    """A request answered with an HTTP error status, then the connection closed."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def response(status, body, keep_alive):
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\n"
            b"Content-Length: %d\r\n" % (status, _REASONS[status], len(body)))
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


class _Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "buffer", "peer", "last_active", "discard")

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.buffer = b""
        self.peer = None
        self.last_active = time.monotonic()
        # Bytes of a (small) request body still to skip.
        self.discard = 0

    def connection_made(self, transport):
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else ""
        self.server.connections.add(self)

    def connection_lost(self, exc):
        self.server.connections.discard(self)

    def data_received(self, data):
        self.last_active = time.monotonic()
        self.buffer += data
        out = []
        try:
            while self.buffer:
                if self.discard:
                    skipped = min(self.discard, len(self.buffer))
                    self.buffer = self.buffer[skipped:]
                    self.discard -= skipped
                    continue
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > self.server.max_header:
                        log.info("tracker closed a connection from %s: header block over %d bytes",
                                 self.peer, self.server.max_header)
                        self.transport.write(b"".join(out))
                        self.transport.close()
                        return
                    if b"\r\n" not in self.buffer and len(self.buffer) > self.server.max_uri + 32:
                        raise HttpError(414)
                    break
                head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
                reply, keep_alive = self._answer(head)
                out.append(reply)
                if not keep_alive:
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
        except HttpError as error:
            out.append(response(error.status, b"", keep_alive=False))
            self.transport.write(b"".join(out))
            self.transport.close()
            return
        if out:
            self.transport.write(b"".join(out))

    def _answer(self, head):
        line, _, headers = head.partition(b"\r\n")
        try:
            method, target, version = line.split(b" ")
        except ValueError:
            raise HttpError(400 if len(line) <= self.server.max_uri else 414) from None
        if len(target) > self.server.max_uri:
            log.info("tracker refused a %d-byte request URI from %s", len(target), self.peer)
            raise HttpError(414)
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            keep_alive = False
        else:
            raise HttpError(400)
        length = 0
        if headers:
            for header in headers.split(b"\r\n"):
                name, sep, value = header.partition(b":")
                if not sep:
                    raise HttpError(400)
                name = name.strip().lower()
                if name == b"content-length":
                    value = value.strip()
                    if not value.isdigit():
                        raise HttpError(400)
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise HttpError(400)  # announces have no body, let alone a chunked one
                elif name == b"connection":
                    value = value.strip().lower()
                    keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
        if length > self.server.max_body:
            raise HttpError(400)
        self.discard = length
        if method != b"GET":
            raise HttpError(405)
        path, _, query = target.partition(b"?")
        handler = self.server.routes.get(path)
        if handler is None:
            raise HttpError(404)
        try:
            body = handler(query, self.peer)
        except Exception:
            log.exception("tracker failed to answer %s from %s", path.decode(errors="replace"), self.peer)
            raise HttpError(500) from None
        return response(200, body, keep_alive), keep_alive


class Server:
    """Serve ``routes`` (``{b"/announce": callback(query_bytes, peer_ip) -> body_bytes}``) on sockets."""

    def __init__(self, routes, *, max_uri, max_header, max_body, idle_timeout):
        self.routes = routes
        self.max_uri = max_uri
        self.max_header = max_header
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections = set()

    async def serve(self, sockets, stopping):
        """Serve until ``stopping`` (an asyncio.Event) is set, then close every connection."""
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: _Connection(self), sock=sock) for sock in sockets]
        try:
            while True:
                try:
                    await asyncio.wait_for(stopping.wait(), _SWEEP_SECONDS)
                    break
                except asyncio.TimeoutError:
                    self._close_idle()
        finally:
            for server in servers:
                server.close()
            for connection in list(self.connections):
                connection.transport.close()
            for server in servers:
                await server.wait_closed()

    def _close_idle(self):
        oldest = time.monotonic() - self.idle_timeout
        for connection in list(self.connections):
            if connection.last_active < oldest:
                connection.transport.close()
