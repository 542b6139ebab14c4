"""TLS: the server context from a certificate and key, optionally requiring client certificates."""
from __future__ import annotations

import datetime
import ipaddress
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.app import create_app
from federation.config import FederationConfig
from federation.tls import server_ssl_context, ssl_context_for


def make_cert(path_prefix, common_name: str, issuer: tuple | None = None, ca: bool = False):
    """A certificate and key (self-signed, or signed by `issuer` = (cert, key)) written as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = path_prefix.with_suffix(".crt"), path_prefix.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key, cert_path, key_path


@pytest.fixture
def pki(tmp_path):
    ca_cert, ca_key, ca_path, _ = make_cert(tmp_path / "ca", "test CA", ca=True)
    _, _, server_cert, server_key = make_cert(tmp_path / "server", "127.0.0.1", issuer=(ca_cert, ca_key))
    _, _, client_cert, client_key = make_cert(tmp_path / "edge", "edge-1", issuer=(ca_cert, ca_key))
    _, _, stranger_cert, stranger_key = make_cert(tmp_path / "stranger", "stranger")  # self-signed
    return {"ca": ca_path, "server": (server_cert, server_key), "client": (client_cert, client_key),
            "stranger": (stranger_cert, stranger_key)}


async def serve(app: web.Application, context: ssl.SSLContext):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"https://127.0.0.1:{port}"


def client_context(ca, cert_and_key=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert_and_key:
        context.load_cert_chain(*map(str, cert_and_key))
    return context


def test_config_requires_a_key_with_its_certificate(tmp_path, pki):
    with pytest.raises(ValueError):
        FederationConfig(data_dir=tmp_path, tls_cert=pki["server"][0])
    with pytest.raises(ValueError):
        FederationConfig(data_dir=tmp_path, tls_client_ca=pki["ca"])
    assert ssl_context_for(FederationConfig(data_dir=tmp_path)) is None
    context = ssl_context_for(FederationConfig(data_dir=tmp_path, tls_cert=pki["server"][0], tls_key=pki["server"][1]))
    assert context.verify_mode == ssl.CERT_NONE and context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_https_serves_with_the_certificate(tmp_path, pki):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, tls_cert=pki["server"][0],
                              tls_key=pki["server"][1])
    runner, url = await serve(create_app(config), ssl_context_for(config))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz", ssl=client_context(pki["ca"])) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # a client that does not trust it
                await session.get(f"{url}/healthz", ssl=ssl.create_default_context())
    finally:
        await runner.cleanup()


async def test_client_certificates_are_required_with_a_client_ca(tmp_path, pki):
    context = server_ssl_context(*pki["server"], client_ca=pki["ca"])
    assert context.verify_mode == ssl.CERT_REQUIRED
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False)
    runner, url = await serve(create_app(config), context)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz", ssl=client_context(pki["ca"], pki["client"])) as resp:
                assert resp.status == 200
            for who in (None, pki["stranger"]):
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz", ssl=client_context(pki["ca"], who)) as resp:
                        await resp.read()
    finally:
        await runner.cleanup()
