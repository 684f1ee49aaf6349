"""Length-prefixed frames over a byte stream, with the size checked before anything is buffered.

Rules (sans-IO): `FrameDecoder` is fed the bytes of one QUIC stream in order, as aioquic delivers
them, and returns complete frame bodies. A frame is a 4-byte big-endian length and a body
(`aspen.wire`). The announced length is checked against the limit as soon as the 4 header bytes
are present — before a single body byte is kept — so a peer announcing 10 MiB + 1 costs us the
bytes of the packet that carried the header, never the 10 MiB. Errors are sticky: after
`LimitExceeded` or `WireDecodeError` the decoder refuses all further input (the adapter resets
the stream; the connection and its other streams carry on).

`encode_frame_parts` is the sending side's check: an oversized body is refused before a byte is
queued for sending.
"""

from __future__ import annotations

from aspen.errors import LimitExceeded, UsageError, WireDecodeError
from aspen.wire import FRAME_HEADER_SIZE, MAX_RPC_MESSAGE_SIZE, decode_frame_header, encode_frame_header


class FrameDecoder:
    """Reassembles frames from one stream's bytes; see the module docstring for the contract."""

    __slots__ = ("_limit_bytes", "_buf", "_body_size", "_error", "_ended", "peak_buffered_bytes")

    def __init__(self, *, limit_bytes: int = MAX_RPC_MESSAGE_SIZE) -> None:
        if limit_bytes < 0:
            raise UsageError(f"limit_bytes must be >= 0, got {limit_bytes}")
        self._limit_bytes = limit_bytes
        self._buf = bytearray()
        self._body_size: int | None = None  # known once the header has been read
        self._error: Exception | None = None
        self._ended = False
        # The most bytes this decoder ever held at once; tests use it to prove that an oversized
        # announcement was refused without buffering its body.
        self.peak_buffered_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    @property
    def is_failed(self) -> bool:
        return self._error is not None

    @property
    def is_idle(self) -> bool:
        """True when no partial frame is buffered (a clean point to end the stream)."""
        return not self._buf and self._body_size is None

    def feed(self, data: bytes) -> list[bytes]:
        """Consume `data` (the next bytes of the stream); return the bodies it completed, in order.

        Raises LimitExceeded when a header announces more than the limit, WireDecodeError after
        the end of the stream; both are sticky (later calls re-raise).
        """
        if self._error is not None:
            raise self._error
        if self._ended:
            self._fail(WireDecodeError("data after the end of the stream"))
        frames: list[bytes] = []
        buf = self._buf
        if not buf and self._body_size is None and len(data) >= FRAME_HEADER_SIZE:
            # Fast path: whole frames in one chunk need no copy into the reassembly buffer.
            offset = 0
            end = len(data)
            while end - offset >= FRAME_HEADER_SIZE:
                size = self._check_header(data[offset:offset + FRAME_HEADER_SIZE])
                if end - offset - FRAME_HEADER_SIZE < size:
                    break
                start = offset + FRAME_HEADER_SIZE
                frames.append(data[start:start + size])
                offset = start + size
            if offset == end:
                return frames
            data = data[offset:]
        buf += data
        while True:
            if self._body_size is None:
                if len(buf) < FRAME_HEADER_SIZE:
                    break
                self._body_size = self._check_header(bytes(buf[:FRAME_HEADER_SIZE]))
                del buf[:FRAME_HEADER_SIZE]
            if len(buf) < self._body_size:
                break
            size = self._body_size
            if size == len(buf):
                frames.append(bytes(buf))
                buf.clear()
            else:
                frames.append(bytes(buf[:size]))
                del buf[:size]
            self._body_size = None
        if len(buf) > self.peak_buffered_bytes:
            self.peak_buffered_bytes = len(buf)
        return frames

    def end_of_stream(self) -> None:
        """The stream ended (FIN). Raises WireDecodeError if a frame was cut short."""
        if self._error is not None:
            raise self._error
        self._ended = True
        if not self.is_idle:
            have = len(self._buf)
            want = self._body_size
            self._fail(WireDecodeError(
                f"stream ended inside a frame ({have} bytes buffered, body size "
                f"{want if want is not None else 'unknown (partial header)'})"))

    def _check_header(self, header: bytes) -> int:
        try:
            return decode_frame_header(header, limit=self._limit_bytes)
        except (LimitExceeded, WireDecodeError) as exc:
            self._fail(exc)
            raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self._buf = bytearray()  # drop whatever was held: a failed stream keeps nothing
        self._body_size = None
        raise exc


def encode_frame_parts(body: bytes, *, limit_bytes: int = MAX_RPC_MESSAGE_SIZE) -> tuple[bytes, bytes]:
    """(header, body) for sending; raises LimitExceeded before anything is queued if too large."""
    return encode_frame_header(len(body), limit=limit_bytes), body


__all__ = ["FrameDecoder", "encode_frame_parts"]
