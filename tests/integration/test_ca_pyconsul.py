"""py-consul's Connect CA calls, unchanged, against `tether agent -dev`."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse

import consul
import pytest

from tether.ca import x509 as tx
from tether.core.chain import match_chain


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def test_agent_connect_root_certificates_and_leaf(c):
    roots = c.agent.connect.ca.roots()
    assert roots["TrustDomain"].endswith(".tether") and roots["ActiveRootID"]
    leaf = c.agent.connect.ca.leaf("web")
    assert leaf["Service"] == "web"
    assert leaf["ServiceURI"] == f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    certs = tx.load_certificates_pem(leaf["CertPEM"])
    key = tx.load_private_key_pem(leaf["PrivateKeyPEM"])
    assert certs[0].public_key() == key.public_key()
    trusted = [tx.load_certificate_pem(r["RootCert"]) for r in roots["Roots"]]
    match_chain(certs[0], certs[1:], trusted, now=dt.datetime.now(dt.timezone.utc))
    assert c.agent.connect.ca.leaf("web")["SerialNumber"] == leaf["SerialNumber"]  # served from the cache


def test_connect_ca_configuration_round_trip(c):
    config = c.connect.ca.configuration()
    assert config["Provider"] == "consul" and config["Config"]["LeafCertTTL"] == "72h0m0s"
    roots = c.connect.ca.roots()
    assert c.connect.ca.update_configuration("consul", {"LeafCertTTL": "24h"}) is True
    assert c.connect.ca.configuration()["Config"]["LeafCertTTL"] == "24h0m0s"
    assert c.connect.ca.roots()["ActiveRootID"] == roots["ActiveRootID"]  # a TTL change rotates nothing
    assert c.connect.ca.update_configuration("consul", {"RotateNow": True}) is True
    rotated = c.connect.ca.roots()
    assert rotated["ActiveRootID"] != roots["ActiveRootID"] and len(rotated["Roots"]) == 2


def test_bad_configuration_raises_with_the_reason(c):
    with pytest.raises(consul.ConsulException, match="out of range"):
        c.connect.ca.update_configuration("consul", {"LeafCertTTL": "10s"})
