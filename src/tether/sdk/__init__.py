"""Native mesh integration for Python services: `from tether.sdk import Service`."""

from tether.sdk.service import Decision, Service

__all__ = ["Decision", "Service"]
