"""Every integration test here runs while "another program" listens on the first ports of the
sidecar range (127.0.0.1:21000-21010), as happens on a shared machine: the agent must skip
them, and nothing here may depend on the range being free (issue 18)."""

from __future__ import annotations

import pytest

from tether.testing.ports import hold_range

#: The ports held for the whole integration session (those not already held by someone else).
FOREIGN_RANGE = (21000, 21010)


@pytest.fixture(scope="session", autouse=True)
def foreign_sidecar_ports():
    held = hold_range(*FOREIGN_RANGE)
    yield [s.getsockname()[1] for s in held]
    for sock in held:
        sock.close()
