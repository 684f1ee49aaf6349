"""The echo protocol handler (no I/O of its own: it only uses the PeerConnection it is given)."""

from __future__ import annotations

import asyncio
import logging

from aspen.errors import AspenError
from aspen.plugin_api import PeerConnection, PeerStream

logger = logging.getLogger(__name__)

ECHO_ALPN = "aspen-echo/1"


class EchoHandler:
    """Serves ECHO_ALPN: echoes each frame back on its stream until the dialer's FIN."""

    alpn = ECHO_ALPN

    async def handle_connection(self, conn: PeerConnection) -> None:
        """Serve `conn` until it closes; one task per stream, all ended when this returns."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                stream = await conn.accept_stream()
                if stream is None:
                    return
                tasks.create_task(self._echo(stream))

    async def _echo(self, stream: PeerStream) -> None:
        try:
            while True:
                body = await stream.read_frame()
                if body is None:
                    await stream.finish()
                    return
                try:
                    # The usual RPC shape (one frame, then FIN): end our side with the reply.
                    last = stream.is_at_eof
                    await stream.write_frame(body, end_stream=last)
                    if last:
                        return
                except AspenError:
                    # A receive-only (unidirectional) stream: drain it, nothing to answer.
                    continue
        except AspenError as exc:
            # A bad frame or a reset ends this stream only; the connection carries on.
            logger.debug("echo stream ended: %s", exc)


__all__ = ["EchoHandler", "ECHO_ALPN"]
