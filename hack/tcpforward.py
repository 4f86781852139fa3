#!/usr/bin/env python3
"""Forward TCP from the real node's address to the API server on loopback.

Pods reach the host only at the node's address (hack/realnode.py), and the
API server listens on 127.0.0.1 only; there is no kube-proxy to make the
``kubernetes`` Service's ClusterIP work. A pod that calls the API (the
operator running in the cluster) is pointed here with
``KUBERNETES_SERVICE_HOST``/``PORT``; the API server's certificate names the
node's address too. Bytes are passed through untouched (TLS end to end).

    tcpforward.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


async def main(listen: str, port: int, target: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host, port, target, target_port = sys.argv[1:5]
    asyncio.run(main(host, int(port), target, int(target_port)))
