"""Helpers for Tether's own tests and for people testing against Tether: start real agents."""
