"""The suite's own rules (tether.testing.suite), run on a small test file in a pytest of its
own: skips are listed at the end with their reasons, and under CI a skip for a dependency
that `make test` installs is a failure while other skips stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SAMPLE = textwrap.dedent("""
    import pytest
    from tether.testing.deps import missing

    def test_needs_redis():
        pytest.skip(missing("redis-server"))

    @pytest.mark.skipif(True, reason=missing("iptables"))
    def test_needs_iptables():
        pass

    def test_needs_root():
        pytest.skip("network namespaces need root")

    def test_plain():
        assert True
""")


def run_sample(tmp_path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tether.testing.suite", "-p", "no:cacheprovider",
                           "-q", str(tmp_path / "test_sample.py")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_skips_are_listed_with_their_reasons(tmp_path):
    r = run_sample(tmp_path, None)
    assert r.returncode == 0, r.stdout
    assert "3 skipped test(s), and why" in r.stdout
    assert "test_sample.py::test_needs_redis: missing dependency: redis-server (make test installs it" in r.stdout
    assert "test_sample.py::test_needs_iptables: missing dependency: iptables" in r.stdout
    assert "test_sample.py::test_needs_root: network namespaces need root" in r.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_dependency_fails_the_run(tmp_path, ci):
    r = run_sample(tmp_path, ci)
    assert r.returncode == 1, r.stdout
    assert "CI=true: a dependency make test installs is missing: missing dependency: redis-server" in r.stdout
    assert "missing dependency: iptables" in r.stdout
    assert "1 skipped test(s), and why" in r.stdout  # needs root: still a skip, still listed
    assert "test_sample.py::test_needs_root: network namespaces need root" in r.stdout


def run_test_deps(tmp_path, apt_exit: int, *, root: bool = True, ci: str | None = None):
    """scripts/test-deps.sh on a PATH that lacks the sbin tools, with stand-ins for apt-get and id."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "apt-get").write_text(f"#!/bin/sh\necho 'E: Unable to locate package haproxy' >&2\nexit {apt_exit}\n")
    (fake / "id").write_text(f"#!/bin/sh\necho {0 if root else 1000}\n")
    for tool in ("apt-get", "id"):
        (fake / tool).chmod(0o755)
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "test-deps.sh")
    env = {"PATH": f"{fake}:/nonexistent-sbin:/bin", **({"CI": ci} if ci else {})}
    return subprocess.run(["/bin/bash", script], capture_output=True, text=True, env=env, timeout=60)


def test_test_deps_fails_loudly_when_apt_fails(tmp_path):
    r = run_test_deps(tmp_path, apt_exit=100)
    assert r.returncode == 1
    assert "test-deps: FAILED: apt-get could not install" in r.stderr and "haproxy" in r.stderr
    assert "Unable to locate package" in r.stderr  # apt's own words are shown


def test_test_deps_fails_when_the_install_did_not_bring_the_tools(tmp_path):
    r = run_test_deps(tmp_path, apt_exit=0)
    assert r.returncode == 1 and "installed, yet still missing" in r.stderr


def test_test_deps_without_root_warns_and_fails_only_under_ci(tmp_path):
    local = run_test_deps(tmp_path, apt_exit=0, root=False)
    assert local.returncode == 0 and "MISSING" in local.stderr and "cannot install" in local.stderr
    assert run_test_deps(tmp_path, apt_exit=0, root=False, ci="true").returncode == 1
