"""The suite's pytest plugin (tests/conftest.py loads it): what a skip means.

- A skip for a missing dependency that `make test` installs (`tether.testing.deps.missing`)
  is a failure under CI (`CI=true`): the run was promised that dependency.
- Every run ends with the list of skipped tests and why, so a skip is never silent.
"""

from __future__ import annotations

import pytest

from tether.testing.deps import in_ci, is_missing

_SKIPPED = pytest.StashKey[list]()


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if in_ci() and is_missing(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true: a dependency make test installs is missing: {reason}"
        else:
            item.config.stash.setdefault(_SKIPPED, []).append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = config.stash.get(_SKIPPED, [])
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} skipped test(s), and why")
    for nodeid, reason in skipped:
        terminalreporter.line(f"{nodeid}: {reason}")
