"""aspen_echo: the echo protocol (ALPN "aspen-echo/1"), used by `aspen ping` and by tests.

Every frame the dialer sends on a bidirectional stream comes back unchanged on the same stream;
when the dialer ends its side (FIN), the echo ends its side too. Frames on unidirectional streams
are read and dropped (a sink for one-way transfers).

Hooks: `aspen_plugin_info` (kind "protocol") and `aspen_protocol_handlers` (one `EchoHandler`).
Config keys: none.
"""

__all__: list[str] = []
