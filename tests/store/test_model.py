"""Model-based test: random transactions against each backend and a plain dict must agree.

Checked after every step: the live contents, create/modify indexes, that the global
revision grows by one per effective transaction, that a failed compare-and-set changes
nothing, and that the index of every prefix never goes backwards. The model's revision
starts at the store's (an etcd store starts at its cluster's revision).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from tether.core.errors import Conflict
from tether.store.base import Check, Delete, DeletePrefix, Put
from tether.store.cached import MemoryStore
from tether.store.etcd import open_etcd_store
from tether.store.sqlite import SqliteStore

KEYS = st.sampled_from(["a/x", "a/y", "a/z/1", "b/x", "b/y/1", "c"])
PREFIXES = st.sampled_from(["", "a/", "a/z/", "b/", "a", "c"])
OPS = st.lists(st.one_of(
    st.builds(Put, KEYS, st.integers(0, 3)),
    st.builds(Delete, KEYS),
    st.builds(DeletePrefix, PREFIXES),
), min_size=1, max_size=4)


class StoreMachine(RuleBasedStateMachine):
    backend = "memory"
    etcd_url = ""  # set by the etcd test: the session cluster

    @initialize()
    def setup(self):
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        if self.backend == "etcd":
            url = self.etcd_url.replace("?prefix=/tether/", f"?prefix=/model/{uuid.uuid4().hex}/")
            self.store = self.loop.run_until_complete(open_etcd_store(url, give_up_after=10))
        else:
            self.store = MemoryStore() if self.backend == "memory" else SqliteStore(Path(self.tmp.name) / "s.db")
        self.model: dict[str, tuple[int, int, int]] = {}  # key -> (value, create, modify)
        self.revision = self.store.revision
        self.seen_index: dict[str, int] = {}

    def teardown(self):
        if hasattr(self, "store"):
            self.loop.run_until_complete(self.store.close())
            self.loop.close()
            self.tmp.cleanup()

    def _apply_model(self, ops):
        after = dict(self.model)
        final: dict[str, object] = {}
        for op in ops:
            if isinstance(op, Put):
                final[op.key] = op.value
            elif isinstance(op, Delete):
                final[op.key] = None
            else:
                for key in [k for k in {**after, **{k: 1 for k, v in final.items() if v is not None}}
                            if k.startswith(op.prefix)]:
                    final[key] = None
        changed = False
        for key, value in final.items():
            if value is None:
                if key in after:
                    del after[key]
                    changed = True
            else:
                created = after[key][1] if key in after else self.revision + 1
                after[key] = (value, created, self.revision + 1)
                changed = True
        return after, changed

    @rule(ops=OPS, guard=st.one_of(st.none(), KEYS), stale=st.booleans())
    def commit(self, ops, guard, stale):
        checks = []
        expect_conflict = False
        if guard is not None:
            current = self.model[guard][2] if guard in self.model else 0
            checks = [Check(guard, current + (1 if stale else 0))]
            expect_conflict = stale
        after, changed = self._apply_model(ops)
        try:
            revision = self.loop.run_until_complete(self.store.commit(ops, checks))
        except Conflict:
            assert expect_conflict
            return
        assert not expect_conflict
        if changed:
            self.revision += 1
            self.model = after
        assert revision == self.revision

    @invariant()
    def contents_match(self):
        if not hasattr(self, "store"):
            return
        assert self.store.revision == self.revision
        live = {e.key: (e.value, e.create_index, e.modify_index) for e in self.store.list("")}
        assert live == self.model
        for prefix in ["", "a/", "a/z/", "b/", "a", "c", "a/x"]:
            index = self.store.index(prefix)
            assert index >= self.seen_index.get(prefix, 0), f"index of {prefix!r} went backwards"
            assert index <= max(self.revision, 1)
            self.seen_index[prefix] = index
            assert [e.key for e in self.store.list(prefix)] == sorted(k for k in self.model if k.startswith(prefix))


class SqliteStoreMachine(StoreMachine):
    backend = "sqlite"


class EtcdStoreMachine(StoreMachine):
    backend = "etcd"


def test_etcd_store_model(etcd_store_cluster):
    EtcdStoreMachine.etcd_url = etcd_store_cluster.url()
    run_state_machine_as_test(EtcdStoreMachine, settings=settings(max_examples=15, stateful_step_count=15,
                                                                  deadline=None))


TestMemoryStoreModel = StoreMachine.TestCase
TestMemoryStoreModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestSqliteStoreModel = SqliteStoreMachine.TestCase
TestSqliteStoreModel.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
