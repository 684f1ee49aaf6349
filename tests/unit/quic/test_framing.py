"""FrameDecoder: frames reassembled from any chunking, the limit checked before buffering."""

from __future__ import annotations

import pytest

from aspen.errors import LimitExceeded, WireDecodeError
from aspen.quic.framing import FrameDecoder, encode_frame_parts
from aspen.wire import MAX_RPC_MESSAGE_SIZE, frame


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 10_000])
def test_frames_survive_any_chunking(chunk_size: int) -> None:
    bodies = [b"", b"a", b"hello world", bytes(range(256)) * 3]
    stream = b"".join(frame(b) for b in bodies)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for piece in chunks(stream, chunk_size):
        got += decoder.feed(piece)
    decoder.end_of_stream()
    assert got == bodies
    assert decoder.is_idle


def test_a_frame_of_exactly_the_limit_passes() -> None:
    decoder = FrameDecoder(limit_bytes=100)
    assert decoder.feed(frame(bytes(100), limit=100)) == [bytes(100)]


def test_one_byte_over_the_limit_is_refused_before_the_body_is_buffered() -> None:
    decoder = FrameDecoder(limit_bytes=100)
    with pytest.raises(LimitExceeded) as info:
        decoder.feed((101).to_bytes(4, "big") + bytes(50))
    assert info.value.value == 101 and info.value.limit == 100
    assert decoder.buffered_bytes == 0
    assert decoder.peak_buffered_bytes == 0


def test_real_limit_header_alone_triggers_the_refusal() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00")  # a header may arrive split
    with pytest.raises(LimitExceeded):
        decoder.feed((MAX_RPC_MESSAGE_SIZE + 1).to_bytes(4, "big")[1:])
    assert decoder.peak_buffered_bytes < 4


def test_errors_are_sticky() -> None:
    decoder = FrameDecoder(limit_bytes=10)
    with pytest.raises(LimitExceeded):
        decoder.feed((11).to_bytes(4, "big"))
    with pytest.raises(LimitExceeded):
        decoder.feed(frame(b"ok"))
    assert decoder.is_failed


@pytest.mark.parametrize("tail", [b"\x00\x00", (5).to_bytes(4, "big") + b"abc"])
def test_a_stream_ending_inside_a_frame_is_malformed(tail: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(frame(b"whole") + tail) == [b"whole"]
    with pytest.raises(WireDecodeError):
        decoder.end_of_stream()


def test_data_after_the_end_is_malformed() -> None:
    decoder = FrameDecoder()
    decoder.end_of_stream()
    with pytest.raises(WireDecodeError):
        decoder.feed(b"x")


def test_sender_refuses_an_oversized_body_before_anything_is_queued() -> None:
    header, body = encode_frame_parts(bytes(MAX_RPC_MESSAGE_SIZE))
    assert int.from_bytes(header, "big") == MAX_RPC_MESSAGE_SIZE and len(body) == MAX_RPC_MESSAGE_SIZE
    with pytest.raises(LimitExceeded):
        encode_frame_parts(bytes(MAX_RPC_MESSAGE_SIZE + 1))


def test_lowering_the_limit_fails_a_frame_already_announced_above_it() -> None:
    import pytest

    from aspen.errors import LimitExceeded
    from aspen.quic.framing import FrameDecoder

    decoder = FrameDecoder()
    assert decoder.feed((100_000).to_bytes(4, "big") + b"x" * 10) == []
    with pytest.raises(LimitExceeded):
        decoder.set_limit(4096)
    assert decoder.buffered_bytes == 0  # what was held is dropped
    ok = FrameDecoder()
    ok.set_limit(4096)
    assert ok.feed((3).to_bytes(4, "big") + b"abc") == [b"abc"]
    with pytest.raises(LimitExceeded):
        ok.feed((4097).to_bytes(4, "big"))
