"""The CA over HTTP: shapes, bad input (refused, CA unchanged), signing checks, rate limit,
the external provider, and key rotation by a supplied key."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tether.ca import x509 as tx
from tether.core.chain import match_chain
from tether.core.spiffe import SpiffeId, service_id
from tether.testing.agent import serve_in_process

NOW = dt.datetime.now(dt.timezone.utc)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_api():
    """One agent for the refusal cases: each asserts that it changed nothing."""
    async with serve_in_process("dev", node="n1") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def state(api) -> tuple[dict, dict]:
    """(roots, config) as served: what must not change after a refused request."""
    roots = (await api.get("/v1/connect/ca/roots")).json()
    config = (await api.get("/v1/connect/ca/configuration")).json()
    return roots, config


async def trust_domain(api) -> str:
    return (await api.get("/v1/agent/connect/ca/roots")).json()["TrustDomain"]


def ca_cert(name: str, key, *, issuer=None, issuer_key=None, not_after=NOW + dt.timedelta(days=365),
            not_before=NOW - dt.timedelta(days=1), path_length=None) -> x509.Certificate:
    """A CA certificate as an organisation's PKI would issue it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key = issuer_key or key
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False)
        .sign(signer_key, tx.signature_hash(signer_key))
    )


def org_pki(*, expired_intermediate: bool = False, path_length: int | None = 0) -> dict[str, str]:
    root_key, inter_key = tx.generate_private_key(), tx.generate_private_key()
    root = ca_cert("Example Corp Root", root_key, not_after=NOW + dt.timedelta(days=3650))
    window = {"not_before": NOW - dt.timedelta(days=30), "not_after": NOW - dt.timedelta(days=1)} \
        if expired_intermediate else {}
    inter = ca_cert("Example Corp Mesh CA", inter_key, issuer=root, issuer_key=root_key, path_length=path_length,
                    **window)
    return {"RootCert": tx.format_cert_pem(root), "IntermediateCert": tx.format_cert_pem(inter),
            "IntermediateKey": tx.format_private_key_pem(inter_key)}


def csr_for(spiffe: SpiffeId, key=None) -> str:
    return tx.make_leaf_csr(spiffe, key or tx.generate_private_key())


def pem_key(key) -> str:
    return tx.format_private_key_pem(key)


async def test_roots_and_configuration_shapes(api):
    roots = (await api.get("/v1/agent/connect/ca/roots")).json()
    assert set(roots) == {"ActiveRootID", "TrustDomain", "Roots"}
    assert roots["TrustDomain"].endswith(".tether")
    (root,) = roots["Roots"]
    assert root["ID"] == roots["ActiveRootID"] and root["Active"] is True
    assert (root["PrivateKeyType"], root["PrivateKeyBits"]) == ("ec", 256)
    assert {"RootCert", "IntermediateCerts", "SigningKeyID", "NotBefore", "NotAfter", "CreateIndex"} <= set(root)
    server_roots = await api.get("/v1/connect/ca/roots")
    assert int(server_roots.headers["X-Consul-Index"]) >= 1
    pem = await api.get("/v1/connect/ca/roots", params={"pem": "true"})
    assert pem.headers["content-type"].startswith("application/pem-certificate-chain")
    assert pem.text == root["RootCert"]
    config = (await api.get("/v1/connect/ca/configuration")).json()
    assert config["Provider"] == "consul" and config["Config"]["LeafCertTTL"] == "72h0m0s"
    assert config["Config"]["CSRMaxPerSecond"] == 50
    for body in (roots, config):
        assert "PRIVATE KEY" not in str(body)


async def test_leaf_shape_and_chain(api):
    r = await api.get("/v1/agent/connect/ca/leaf/web")
    leaf = r.json()
    assert set(leaf) == {"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter",
                         "ValidBefore", "CreateIndex", "ModifyIndex"}
    assert r.headers["X-Consul-Index"] == str(leaf["ModifyIndex"])
    td = await trust_domain(api)
    assert leaf["ServiceURI"] == f"spiffe://{td}/ns/default/dc/dc1/svc/web"
    served = (await api.get("/v1/agent/connect/ca/roots")).json()["Roots"]
    roots = [tx.load_certificate_pem(x["RootCert"]) for x in served]
    certs = tx.load_certificates_pem(leaf["CertPEM"])
    match_chain(certs[0], certs[1:], roots, now=dt.datetime.now(dt.timezone.utc))
    ttl = dt.datetime.fromisoformat(leaf["ValidBefore"]) - dt.datetime.fromisoformat(leaf["ValidAfter"])
    assert ttl == dt.timedelta(hours=72, minutes=1)  # 72h, backdated by a minute


@pytest.mark.parametrize(("config", "reason"), [
    ({"Config": {"LeafCertTTL": "30s"}}, "out of range"),
    ({"Config": {"LeafCertTTL": "9000h"}}, "out of range"),
    ({"Config": {"LeafCertTTL": 3600}}, "duration string"),
    ({"Provider": "vault", "Config": {}}, "not supported"),
    ({"Config": {"Bogus": 1, "CSRMaxPerSecond": -1}}, "Bogus"),  # every problem reported at once ...
    ({"Config": {"Bogus": 1, "CSRMaxPerSecond": -1}}, "CSRMaxPerSecond"),  # ... in one message
    ({"Config": {"PrivateKey": "not a key"}}, "no PEM data"),
    ({"Config": {"PrivateKey": pem_key(ec.generate_private_key(ec.SECP384R1()))}}, "P-256"),
    ({"Config": {"PrivateKey": pem_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))}},
     "too small"),
    ({"Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 384}}, "not supported"),
    ({"Provider": "external", "Config": org_pki(expired_intermediate=True)}, "IntermediateCert expired"),
    ({"Provider": "external", "Config": {"RootCert": org_pki()["RootCert"]}}, "IntermediateKey"),
    ({"Provider": "external", "Config": {**org_pki(), "IntermediateKey": org_pki()["IntermediateKey"]}},
     "does not match"),
    ({"Provider": "external", "Config": {"RootCertFile": "/nonexistent/root.pem"}}, "cannot read"),
])
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_configuration_is_refused_and_changes_nothing(shared_api, config, reason):
    api = shared_api
    before = await state(api)
    r = await api.put("/v1/connect/ca/configuration", json=config)
    assert r.status_code == 400, r.text
    assert reason in r.text and "\n" not in r.text.strip()
    assert await state(api) == before


async def test_sign_checks_the_requested_identity(api):
    td = await trust_domain(api)

    async def sign(csr: str, service: str = "web") -> httpx.Response:
        return await api.post("/v1/connect/ca/sign", json={"CSR": csr, "Service": service, "Node": "n1"})

    assert (await sign(csr_for(service_id(td, "dc1", "web")))).status_code == 200
    cases = [
        (csr_for(service_id("11111111-2222-3333-4444-555555555555.tether", "dc1", "web")), "web", 403,
         "trust domain"),
        (csr_for(service_id(td, "dc1", "db")), "web", 403, "may only get"),
        (csr_for(service_id(td, "dc2", "web")), "web", 403, "may only get"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n", "web", 400,
         "malformed"),
        ("hello", "web", 400, "no PEM data"),
        (csr_for(service_id(td, "dc1", "web"), rsa.generate_private_key(public_exponent=65537, key_size=1024)),
         "web", 400, "too small"),
        (csr_for(service_id(td, "dc1", "web"), ec.generate_private_key(ec.SECP384R1())), "web", 400, "P-256"),
    ]
    for csr, service, status, reason in cases:
        r = await sign(csr, service)
        assert (r.status_code, reason in r.text) == (status, True), (reason, r.status_code, r.text)
    r = await api.post("/v1/connect/ca/sign", json={"CSR": "x", "Extra": 1})
    assert r.status_code == 400 and "Extra" in r.text and "Service" in r.text
    r = await api.get("/v1/agent/connect/ca/leaf/bad_name")
    assert r.status_code == 400 and "service name" in r.text


async def test_signing_rate_limit_answers_429_with_retry_after(api):
    r = await api.put("/v1/connect/ca/configuration", json={"Config": {"CSRMaxPerSecond": 0.1}})
    assert r.status_code == 200, r.text
    td = await trust_domain(api)
    answers = [await api.post("/v1/connect/ca/sign", json={"CSR": csr_for(service_id(td, "dc1", "web")),
                                                          "Service": "web"}) for _ in range(3)]
    assert answers[0].status_code == 200
    limited = [a for a in answers if a.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1 and "CSRMaxPerSecond" in limited[0].text
    # The agent passes the refusal on: a client asking for a new leaf is told when to come back.
    r = await api.get("/v1/agent/connect/ca/leaf/fresh")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


async def test_leaf_ttl_change_applies_to_new_leaves(api):
    r = await api.put("/v1/connect/ca/configuration", json={"Provider": "consul", "Config": {"LeafCertTTL": "1h"}})
    assert r.status_code == 200, r.text
    leaf = (await api.get("/v1/agent/connect/ca/leaf/api")).json()
    ttl = dt.datetime.fromisoformat(leaf["ValidBefore"]) - dt.datetime.fromisoformat(leaf["ValidAfter"])
    assert ttl == dt.timedelta(hours=1, minutes=1)
    config = (await api.get("/v1/connect/ca/configuration")).json()
    assert config["Config"]["LeafCertTTL"] == "1h0m0s"


async def test_get_then_put_is_a_no_op(api):
    before = await state(api)
    r = await api.put("/v1/connect/ca/configuration", json=before[1])
    assert r.status_code == 200, r.text
    roots, _ = await state(api)
    assert roots["ActiveRootID"] == before[0]["ActiveRootID"] and len(roots["Roots"]) == 1


async def test_rotation_to_a_supplied_key(api):
    before, _ = await state(api)
    key = tx.generate_private_key()
    supplied = {"Provider": "consul", "Config": {"PrivateKey": pem_key(key)}}
    r = await api.put("/v1/connect/ca/configuration", json=supplied)
    assert r.status_code == 200, r.text
    roots, _ = await state(api)
    active = next(x for x in roots["Roots"] if x["Active"])
    assert tx.load_certificate_pem(active["RootCert"]).public_key() == key.public_key()
    assert {x["ID"] for x in roots["Roots"]} == {before["ActiveRootID"], active["ID"]}
    # The same key again changes nothing.
    r = await api.put("/v1/connect/ca/configuration", json=supplied)
    assert r.status_code == 200 and (await state(api))[0] == roots


async def test_external_provider_from_pem_and_from_files(api, tmp_path):
    before, _ = await state(api)
    org = org_pki(path_length=None)  # room below the intermediate, so it can cross-sign a later root
    r = await api.put("/v1/connect/ca/configuration", json={"Provider": "external", "Config": org})
    assert r.status_code == 200, r.text
    roots, config = await state(api)
    assert config["Provider"] == "external" and "IntermediateKey" not in config["Config"]
    assert "PRIVATE KEY" not in str(config)
    active = next(x for x in roots["Roots"] if x["Active"])
    assert active["RootCert"] == org["RootCert"] and len(roots["Roots"]) == 2
    assert active["IntermediateCerts"][0] == org["IntermediateCert"]
    leaf = (await api.get("/v1/agent/connect/ca/leaf/web")).json()
    certs = tx.load_certificates_pem(leaf["CertPEM"])
    now = dt.datetime.now(dt.timezone.utc)
    # Chains to the organisation's root, and (through the cross-signed cert) to the old built-in root.
    for trusted in (org["RootCert"], next(x["RootCert"] for x in roots["Roots"] if x["ID"] == before["ActiveRootID"])):
        match_chain(certs[0], certs[1:], [tx.load_certificate_pem(trusted)], now=now)
    # Rotate again, to a second organisation CA given as files on the server.
    files = {}
    for name, text in org_pki().items():
        path = tmp_path / f"{name}.pem"
        path.write_text(text)
        path.chmod(0o600)
        files[name + "File"] = str(path)
    r = await api.put("/v1/connect/ca/configuration", json={"Provider": "external", "Config": files})
    assert r.status_code == 200, r.text
    roots, config = await state(api)
    assert len(roots["Roots"]) == 3
    assert next(x for x in roots["Roots"] if x["Active"])["RootCert"] == (tmp_path / "RootCert.pem").read_text()
    # That intermediate has pathLen 0: it cannot cross-sign a new root, so leaving it is refused ...
    r = await api.put("/v1/connect/ca/configuration", json={"Provider": "consul", "Config": {}})
    assert r.status_code == 400 and "pathLen 0" in r.text and "ForceWithoutCrossSigning" in r.text
    assert await state(api) == (roots, config)
    # ... unless the operator accepts the window without cross-signing.
    r = await api.put("/v1/connect/ca/configuration",
                      json={"Provider": "consul", "Config": {}, "ForceWithoutCrossSigning": True})
    assert r.status_code == 200, r.text
    roots, config = await state(api)
    assert config["Provider"] == "consul" and len(roots["Roots"]) == 4
    assert next(x for x in roots["Roots"] if x["Active"])["IntermediateCerts"] is None
