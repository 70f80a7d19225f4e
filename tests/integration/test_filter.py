"""`?filter=` (Consul's bexpr) through py-consul's filter_expr, on the catalog, health and agent lists."""

from __future__ import annotations

from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import BadRequest


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    client = consul.Consul(host=url.hostname, port=url.port)
    client.agent.service.register("web", service_id="web-1", port=8080, tags=["v1"], meta={"env": "prod"})
    client.agent.service.register("web", service_id="web-2", port=8081, tags=["v2"], meta={"env": "dev"})
    yield client
    for sid in ("web-1", "web-2"):
        client.agent.service.deregister(sid)


def test_health_and_catalog_filters(c):
    _, entries = c.health.service("web", filter_expr='Service.Meta.env == prod and "v1" in Service.Tags')
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    _, instances = c.catalog.service("web", filter_expr="ServicePort != 8080")
    assert [i["ServiceID"] for i in instances] == ["web-2"]
    _, services = c.catalog.services(filter_expr="ServiceMeta.env == dev")
    assert services == {"web": ["v2"]}  # the services of the instances that pass, with their tags
    _, nodes = c.catalog.nodes(filter_expr="Node matches `^node`")
    assert len(nodes) == 1


def test_agent_filters(c):
    assert set(c.agent.services(filter_expr="Tags contains v2")) == {"web-2"}
    assert set(c.agent.services(filter_expr="not (Port == 8081)")) == {"web-1"}


def test_a_bad_filter_is_a_400_naming_the_position(c, dev_agent):
    with pytest.raises(BadRequest, match="position 19 \\(at the end\\)"):
        c.health.service("web", filter_expr="Service.Service ==")
    r = httpx.get(f"{dev_agent.url}/v1/agent/services", params={"filter": "Srvice == web"})
    assert r.status_code == 400 and "'Srvice' is not a field" in r.text
