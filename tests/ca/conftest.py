"""Fixtures for the CA tests: the clock, trust domains, hand-built external CAs,
and a real OpenSSL mutual-TLS handshake over memory BIOs (the proxy relies on OpenSSL
accepting Tether's chains, so these tests ask OpenSSL itself, not cryptography)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
from ca_testkit import NOW, ExternalPki, make_external_pki

from tether.ca.builtin import BuiltinCA
from tether.core.spiffe import SpiffeId, service_id
from tether.testing.tls import mtls_handshake


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def trust_domain() -> str:
    return f"{uuid.uuid4()}.tether"


@pytest.fixture
def builtin(trust_domain: str) -> BuiltinCA:
    return BuiltinCA.generate(trust_domain, NOW)


@pytest.fixture
def web_id(trust_domain: str) -> SpiffeId:
    return service_id(trust_domain, "dc1", "web")


@pytest.fixture
def db_id(trust_domain: str) -> SpiffeId:
    return service_id(trust_domain, "dc1", "db")


@pytest.fixture
def external_pki() -> ExternalPki:
    return make_external_pki()


HandshakeFn = Callable[..., str | None]


@pytest.fixture
def tls_handshake() -> HandshakeFn:
    """mTLS handshake between two OpenSSL endpoints; None on success or the error text
    (tether.testing.tls: each side presents its Identity and trusts exactly the roots given)."""
    return mtls_handshake
