"""The catalog's one-namespace-per-name rule under races (issue 11 item 3), over SQLite: two
registrations planned against the same state, putting one new name in two namespaces,
cannot both commit; the loser is planned again and refused with the reason."""

from __future__ import annotations

import pytest

from tether.control.catalog import NAMESPACE_CLAIMS, Catalog
from tether.core.errors import Conflict, InvalidInput
from tether.core.registration import format_service
from tether.core.service import parse_service_definition
from tether.store.sqlite import SqliteStore

NODE = {"ID": "", "Node": "n1", "Address": "192.0.2.1", "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {}}


def instance(name: str, sid: str, namespace: str) -> dict:
    return format_service(parse_service_definition({"ID": sid, "Name": name, "Port": 80, "Namespace": namespace}),
                          node="n1", datacenter="dc1")


@pytest.fixture
async def catalog(tmp_path):
    store = SqliteStore(tmp_path / "state.db")
    yield Catalog(store)
    await store.close()


async def test_two_racing_registrations_of_one_new_name_cannot_both_commit(catalog):
    first = catalog.register_ops(NODE, [instance("web", "web-a", "team-a")])
    second = catalog.register_ops(NODE, [instance("web", "web-b", "team-b")])  # planned before the first lands
    await catalog.store.commit(*first)
    with pytest.raises(Conflict):
        await catalog.store.commit(*second)
    with pytest.raises(InvalidInput, match="service 'web' is registered in namespace 'team-a'"):
        await catalog.register(NODE, [instance("web", "web-b", "team-b")])  # planned again: refused
    assert {d["ID"] for d in catalog.instances("web")} == {"web-a"}


async def test_a_claim_left_by_removed_instances_is_taken_over(catalog):
    await catalog.register(NODE, [instance("web", "web-a", "team-a")])
    await catalog.deregister("n1", service_id="web-a")
    await catalog.register(NODE, [instance("web", "web-b", "team-b")])
    assert catalog.namespace_of("web") == "team-b"
    assert catalog.store.get(NAMESPACE_CLAIMS + "web").value == {"Namespace": "team-b"}
