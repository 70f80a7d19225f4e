"""Network-namespace tests: skipped with the reason when the machine cannot make namespaces."""

from __future__ import annotations

import pytest

from tether.testing.netns import available

_why = available()


def pytest_collection_modifyitems(config, items):
    if _why is None:
        return
    for item in items:
        if "tests/netns/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=_why))
