"""Benchmarks (not tests): `make bench` runs them all; each prints a table and writes JSON
to bench/results/. No benchmark asserts timings; the tables are read by people."""
