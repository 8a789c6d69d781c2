"""A TCP front door to the test PostgreSQL that can be shut, to take "the database" down.

The hub (a subprocess) connects to ``127.0.0.1:<port>``; each connection is piped to the
embedded server's Unix socket. ``down()`` closes the listener and every open connection
(clients then get "connection refused", as with a stopped server); ``hang()`` accepts
connections and never answers (a database that does not respond); ``up()`` serves again
on the same port. The PostgreSQL behind it keeps its data throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from sqlalchemy.engine import make_url


def unix_socket_of(url: str) -> str:
    query = make_url(url).query
    return f"{query['host']}/.s.PGSQL.{query['port']}"


class DatabaseSwitch:
    def __init__(self, db_url: str):
        self.db_url = db_url
        self.socket_path = unix_socket_of(db_url)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.mode = "down"

    @property
    def url(self) -> str:
        """The database URL a client uses to come through this switch (TCP)."""
        parsed = make_url(self.db_url)
        return parsed.set(host="127.0.0.1", port=self.port, query={}).render_as_string(
            hide_password=False
        )

    async def _handle(self, reader, writer) -> None:
        self._writers.add(writer)
        if self.mode == "hang":
            with contextlib.suppress(Exception):
                await reader.read()
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def up(self) -> None:
        self._drop_connections()
        self.mode = "up"
        await self._listen()

    async def hang(self) -> None:
        self._drop_connections()
        self.mode = "hang"
        await self._listen()

    async def down(self) -> None:
        self.mode = "down"
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._drop_connections()
        if server is not None:
            await server.wait_closed()

    def _drop_connections(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.close()
        self._writers.clear()
