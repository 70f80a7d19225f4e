"""Fixtures for the loopback egress tests: one mesh CA and one external CA per module."""

from __future__ import annotations

import pytest

from tether.testing.pki import ThrowawayCA

from egress_kit import TD, external_ca


@pytest.fixture(scope="module")
def mesh_ca() -> ThrowawayCA:
    return ThrowawayCA(TD)


@pytest.fixture(scope="module")
def ext_ca():
    return external_ca()
