"""Tether: a service mesh. Identity (SPIFFE), mutual TLS and name-based authorization
between services, discovery, configuration and egress control."""

__version__ = "0.1.0"
