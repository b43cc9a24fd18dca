"""Managed-Redis connection settings against a private redis-server speaking TLS with a
password, as Upstash and ElastiCache (in-transit encryption, AUTH token) do."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.redis.client import RedisStore, create_client
from adapters.redis.rate_limiter import RedisRateLimiter
from adapters.redis.wire import Multiplexer
from application.errors import ServiceUnavailable
from application.quota.ports import RateCheck, RateLimiter
from domain.quota.rate_limit import RateLimitRule
from entrypoints.ioc.container import make_container
from entrypoints.settings import load_settings
from tests.redis_support import RedisServer

PASSWORD = "s3cret-token"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sba test redis")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path):
    cert, key = self_signed(tmp_path)
    server = RedisServer(tmp_path)
    server.extra = (  # the TLS port replaces the plain one
        "--port",
        "0",
        "--tls-port",
        str(server.port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
    )
    url = f"rediss://127.0.0.1:{server.port}/0"
    server.start(check_url=f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?ssl_cert_reqs=none")
    try:
        yield url, cert
    finally:
        server.stop()


RULE = RateLimitRule(limit=60, window_s=60, burst=2)
# Both ways to Redis: the shared pipelined connection, and redis-py's pool alone (the way of
# Redis Cluster).
WAYS = pytest.mark.parametrize("shared", [True, False], ids=["shared-connection", "pool"])


def store_for(url: str, *, shared: bool, password: str | None, ca: str | None) -> RedisStore:
    client = create_client(url, password=password, tls_ca_file=ca)
    mux = Multiplexer(url, password=password, tls_ca_file=ca) if shared else None
    return RedisStore(client, mux=mux)


@WAYS
async def test_a_tls_connection_with_the_ca_and_password_serves_the_limiter(
    tls_redis, shared
) -> None:
    url, ca = tls_redis
    store = store_for(url, shared=shared, password=PASSWORD, ca=str(ca))
    try:
        await store.ping()
        limiter = RedisRateLimiter(store)
        decisions = [
            await limiter.hit("t:1", [RateCheck(policy="tenant", key="read", rule=RULE)])
            for _ in range(3)
        ]
        assert [d.allowed for d in decisions] == [True, True, False]
    finally:
        await store.close()


@WAYS
@pytest.mark.parametrize(
    ("password", "use_ca"),
    [(PASSWORD, False), ("wrong", True), (None, True)],
    ids=["unverified-certificate", "wrong-password", "no-password"],
)
async def test_an_untrusted_server_or_a_bad_password_is_service_unavailable(
    tls_redis, password, use_ca, shared
) -> None:
    url, ca = tls_redis
    store = store_for(url, shared=shared, password=password, ca=str(ca) if use_ca else None)
    try:
        with pytest.raises(ServiceUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_settings_carry_the_password_file_and_ca_to_the_adapters(tls_redis, tmp_path) -> None:
    url, ca = tls_redis
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    settings = load_settings(
        {
            "SBA_DATA_DIR": str(tmp_path),
            "SBA_REDIS_URL": url,
            "SBA_REDIS__PASSWORD_FILE": str(secret),
            "SBA_REDIS__TLS_CA_FILE": str(ca),
            "SBA_REDIS__KEY_PREFIX": "tls-test:",
        }
    )
    container = make_container(settings)
    try:
        limiter = await container.get(RateLimiter)
        decision = await limiter.hit("t:1", [RateCheck(policy="tenant", key="read", rule=RULE)])
        assert decision.allowed
    finally:
        await container.close()
