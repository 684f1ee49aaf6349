"""Identity on the wire, sans-IO: who may complete a handshake with whom.

Every case drives two AspenQuicConnections by hand; a refusal shows up as the refusing side
closing with QUIC CRYPTO_ERROR (0x100) + the TLS alert (RFC 9001 §4.8).
"""

from __future__ import annotations

import pytest
from aioquic import tls
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from aspen.identity import SecretKey
from aspen.quic.peer import classify_handshake_failure
from aspen.quic.tls_identity import (
    CERT_NOT_AFTER,
    CERT_NOT_BEFORE,
    PeerIdentityError,
    endpoint_id_from_certificate,
    install_identity_checks,
    make_identity_certificate,
)
from tests.unit.quic._pair import config, drain, handshake, make_pair

CRYPTO = 0x100


def close_code(conn: object) -> int | None:
    event = conn._close_event  # type: ignore[attr-defined]
    return None if event is None else int(event.error_code)


def test_certificate_carries_the_identity_key_and_is_deterministic() -> None:
    key = SecretKey.generate()
    cert, private = make_identity_certificate(key)
    assert endpoint_id_from_certificate(cert) == key.public()
    again, _ = make_identity_certificate(key)
    assert cert == again  # same key, same certificate: a restarted node looks the same


def test_a_non_ed25519_certificate_has_no_endpoint_id() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ec_key.public_key()).serial_number(1)
            .not_valid_before(CERT_NOT_BEFORE).not_valid_after(CERT_NOT_AFTER)
            .sign(ec_key, hashes.SHA256()))
    with pytest.raises(PeerIdentityError):
        endpoint_id_from_certificate(cert)


def test_matching_keys_complete_and_each_side_learns_the_other() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk)
    assert client.remote_id is None and server.remote_id is None
    handshake(client, server)
    assert client.remote_id == sk.public()
    assert server.remote_id == ck.public()
    assert any(isinstance(e, HandshakeCompleted) for e in drain(server))
    assert client._handshake_confirmed  # the server sent HANDSHAKE_DONE: it accepted our key


def test_dialer_rejects_a_server_that_is_not_the_dialed_key() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk, dial=SecretKey.generate().public())
    handshake(client, server)
    assert close_code(client) == CRYPTO + tls.AlertDescription.bad_certificate
    assert client.remote_id is None
    assert server.remote_id is None  # the client never sent its Finished


def test_acceptor_rejects_a_certificate_for_a_key_the_dialer_does_not_hold() -> None:
    ck, sk, victim = SecretKey.generate(), SecretKey.generate(), SecretKey.generate()
    forged = config(ck, is_client=True, alpns=["test/1"])
    forged.certificate, _ = make_identity_certificate(victim)  # names the victim, we sign
    client, server = make_pair(ck, sk, client_config=forged)
    handshake(client, server)
    assert close_code(server) == CRYPTO + tls.AlertDescription.decrypt_error
    assert server.remote_id is None
    assert not any(isinstance(e, HandshakeCompleted) for e in drain(server))


def test_acceptor_rejects_a_dialer_without_certificate() -> None:
    sk = SecretKey.generate()
    anonymous = config(None, is_client=True, alpns=["test/1"])
    client, server = make_pair(None, sk, client_config=anonymous)
    handshake(client, server)
    assert close_code(server) == CRYPTO + tls.AlertDescription.certificate_required
    assert server.remote_id is None


def test_unknown_alpn_is_refused_during_the_handshake() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk, client_alpn="other/1", server_alpns=("test/1",))
    handshake(client, server)
    assert close_code(server) == CRYPTO + tls.AlertDescription.no_application_protocol
    closes = [e for e in drain(client) if isinstance(e, ConnectionTerminated)]
    reason = classify_handshake_failure(closes[0] if closes else client._close_event)
    assert reason == "unknown_alpn"


@pytest.mark.parametrize("alert, reason", [
    (tls.AlertDescription.bad_certificate, "bad_key"),
    (tls.AlertDescription.decrypt_error, "bad_key"),
    (tls.AlertDescription.certificate_required, "bad_key"),
    (tls.AlertDescription.no_application_protocol, "unknown_alpn"),
    (tls.AlertDescription.handshake_failure, "other"),
])
def test_handshake_failure_reasons(alert: int, reason: str) -> None:
    event = ConnectionTerminated(error_code=CRYPTO + alert, frame_type=None, reason_phrase="x")
    assert classify_handshake_failure(event) == reason
    idle = ConnectionTerminated(error_code=0, frame_type=None, reason_phrase="Idle timeout")
    assert classify_handshake_failure(idle) == "timeout"


def test_identity_checks_install_once_and_only_on_plain_contexts() -> None:
    context = tls.Context(is_client=True)
    install_identity_checks(context, expected_peer_id=None)
    with pytest.raises(TypeError):
        install_identity_checks(context, expected_peer_id=None)


def test_a_dialer_generates_one_x25519_key_share_and_still_completes() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk)
    handshake(client, server)
    assert client.remote_id == sk.public() and server.remote_id == ck.public()
    # aioquic's default would also have generated P-256, P-384 and X448 keys (~1 ms per dial).
    assert client.tls._x25519_private_key is not None
    assert client.tls._ec_private_keys == [] and client.tls._x448_private_key is None
    assert server.tls._supported_groups != [tls.Group.X25519]  # acceptors take any group
