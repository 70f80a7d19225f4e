"""The store suites' own etcd: nothing but these tests writes to it.

The conformance and model-based suites assert that each write moves the revision by
exactly one. On the session's shared cluster a `tether server` killed by another test
leaves a lease behind whose expiry (up to its TTL later) deletes keys and moves etcd's
revision in the middle of such a test; here no lease is ever granted.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def etcd_store_cluster(tmp_path_factory):
    from tether.testing.deps import missing
    from tether.testing.etcd import EtcdCluster, etcd_available

    if not etcd_available():
        pytest.skip(missing("etcd"))
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-store"), size=3).start()
    yield cluster
    cluster.stop()
