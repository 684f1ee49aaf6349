"""Identity on the wire: TLS 1.3 certificates that carry a node's Ed25519 key, and the checks.

Rules (sans-IO; no sockets, no clock, no randomness of our own):

* Every endpoint presents a self-signed X.509 certificate whose subject public key *is* its
  Ed25519 identity key (`make_identity_certificate`). The certificate is only a container: its
  names, dates and issuer signature are never trusted. What proves identity is TLS 1.3's
  CertificateVerify, a signature by that key over the handshake transcript (RFC 8446 §4.4.3),
  which aioquic already checks against the certificate's key.
* The dialer knows which EndpointId it dialed; it aborts the handshake (alert bad_certificate)
  unless the server's certificate key equals it — before it sends its own Finished.
* The acceptor always requests a client certificate (aioquic has the client side of RFC 8446
  §4.3.2 but only a test switch on the server side, `_request_client_certificate`). An empty
  client Certificate is refused with certificate_required (RFC 8446 §4.4.2.4 lets a server
  abort); a non-Ed25519 key with unsupported_certificate. The key proven by CertificateVerify
  becomes `verified_peer_id`.
* Session resumption (PSK) would skip certificates; Aspen never configures session tickets.

Theory of operation: aioquic builds its `tls.Context` inside `QuicConnection._initialize`;
`install_identity_checks` turns that instance into an `IdentityTlsContext` (a subclass that only
adds checks after aioquic's own) and restricts signature algorithms to Ed25519. This is iroh's
model (iroh-protocols.md §1.2) with X.509 instead of RFC 7250 raw keys, which aioquic lacks.
"""

from __future__ import annotations

import datetime

from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from aspen.errors import PeerProtocolError
from aspen.identity import EndpointId, SecretKey

# The certificate's dates are never checked by Aspen (identity is the key, not a CA's word), but
# some tools print or check them; a fixed, wide window keeps certificates deterministic per key.
CERT_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
CERT_NOT_AFTER = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)
# RFC 5280 §4.1.2.2: a positive serial number; any fixed value will do for self-signed certs.
CERT_SERIAL_NUMBER = 1
# The one (EC)DHE group a dialer offers a key share for (RFC 8446 §4.2.8; RFC 7748 X25519).
KEY_SHARE_GROUP = tls.Group.X25519


class PeerIdentityError(PeerProtocolError):
    """A peer's certificate did not prove the identity it had to prove."""

    error_code = 0x100 + int(tls.AlertDescription.bad_certificate)  # QUIC CRYPTO_ERROR + alert


class AlertCertificateRequired(tls.Alert):
    """TLS alert 116: the client sent no certificate (RFC 8446 §6.2)."""

    description = tls.AlertDescription.certificate_required


def identity_private_key(secret_key: SecretKey) -> ed25519.Ed25519PrivateKey:
    """The `cryptography` form of the node's Ed25519 key (same 32-byte seed, RFC 8032)."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(secret_key.seed)


def make_identity_certificate(secret_key: SecretKey) -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    """A self-signed certificate carrying `secret_key`'s public key, and the private key.

    Deterministic for a given key (fixed dates and serial; Ed25519 signatures are deterministic),
    so a restarted node presents the same certificate.
    """
    private_key = identity_private_key(secret_key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secret_key.public().hex()[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(CERT_SERIAL_NUMBER)
        .not_valid_before(CERT_NOT_BEFORE)
        .not_valid_after(CERT_NOT_AFTER)
        .sign(private_key, algorithm=None)  # Ed25519 signs without a separate digest
    )
    return cert, private_key


def endpoint_id_from_certificate(cert: x509.Certificate) -> EndpointId:
    """The EndpointId whose key `cert` carries; PeerIdentityError if it is not an Ed25519 key."""
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PeerIdentityError(f"certificate key cannot be used: {exc}") from exc
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise PeerIdentityError(f"certificate key is {type(public_key).__name__}, not Ed25519")
    return EndpointId(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


class IdentityTlsContext(tls.Context):
    """aioquic's TLS context plus Aspen's identity checks (see the module docstring).

    Never constructed directly: `install_identity_checks` converts the instance aioquic built.
    After the handshake, `verified_peer_id` is the peer's proven key (both roles).
    """

    expected_peer_id: EndpointId | None
    verified_peer_id: EndpointId | None

    def _verified_certificate_id(self) -> EndpointId:
        cert = self._peer_certificate
        if cert is None:  # pragma: no cover - aioquic only calls us after a certificate
            raise AlertCertificateRequired("peer sent no certificate")
        try:
            return endpoint_id_from_certificate(cert)
        except PeerIdentityError as exc:
            raise tls.AlertUnsupportedCertificate(str(exc)) from exc

    # client role ------------------------------------------------------------------------------

    def _client_handle_certificate_verify(self, input_buf: Buffer) -> None:
        # aioquic first checks the CertificateVerify signature (proof of possession of the key).
        super()._client_handle_certificate_verify(input_buf)
        peer_id = self._verified_certificate_id()
        if self.expected_peer_id is None or peer_id != self.expected_peer_id:
            raise tls.AlertBadCertificate(
                f"server proved key {peer_id.short()}, but we dialed "
                f"{self.expected_peer_id.short() if self.expected_peer_id else 'nobody'}")
        self.verified_peer_id = peer_id

    # server role ------------------------------------------------------------------------------

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate(input_buf)
        if self._peer_certificate is None:
            # aioquic would carry on without client authentication; Aspen never does.
            raise AlertCertificateRequired("client sent no certificate; Aspen requires one")

    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)
        self.verified_peer_id = self._verified_certificate_id()

    def _server_handle_finished(self, input_buf: Buffer, output_buf: Buffer) -> None:
        # Defence in depth: whatever path the state machine took, no Finished is accepted from a
        # client whose key was not proven.
        if self.verified_peer_id is None:
            raise AlertCertificateRequired("client finished without proving a key")
        super()._server_handle_finished(input_buf, output_buf)


def install_identity_checks(context: tls.Context, *, expected_peer_id: EndpointId | None) -> IdentityTlsContext:
    """Turn aioquic's freshly built `context` into an `IdentityTlsContext`, in place.

    Call exactly once, right after `QuicConnection._initialize` built the context and before any
    handshake message is handled. `expected_peer_id` is required for the client role (the key it
    dialed) and ignored for the server role. Returns the same object, retyped.
    """
    if type(context) is not tls.Context:
        raise TypeError(f"expected a plain aioquic tls.Context, got {type(context).__name__}")
    # Changing __class__ to a subclass that adds no slots or state of its own is supported by
    # CPython; it avoids re-implementing aioquic's context construction.
    context.__class__ = IdentityTlsContext
    assert isinstance(context, IdentityTlsContext)
    context.expected_peer_id = expected_peer_id
    context.verified_peer_id = None
    # Only Ed25519 identities exist in Aspen; advertising nothing else also means a peer cannot
    # steer us into verifying an RSA/ECDSA certificate.
    context._signature_algorithms = [tls.SignatureAlgorithm.ED25519]
    if context._is_client:
        # aioquic's client generates a key share for each of P-256, P-384, X25519 and X448
        # (~1 ms of key generation per dial, measured) and the server uses only one. Offer
        # X25519 alone, as rustls (iroh) does by default; servers keep accepting every group.
        context._supported_groups = [KEY_SHARE_GROUP]
    else:
        context._request_client_certificate = True
    return context


__all__ = [
    "PeerIdentityError",
    "AlertCertificateRequired",
    "identity_private_key",
    "make_identity_certificate",
    "endpoint_id_from_certificate",
    "IdentityTlsContext",
    "install_identity_checks",
]
