"""The data directory's modes: what is private, what is refused and with which fix."""

from __future__ import annotations

import stat

import pytest

from tether.core.filemode import data_dir_problem, narrowed

DIR = stat.S_IFDIR


@pytest.mark.parametrize("mode", [0o700, 0o500, 0o1700])
def test_private_directories_pass(mode):
    assert data_dir_problem("/d", DIR | mode, owner=7, user=7) is None


@pytest.mark.parametrize("mode, words", [
    (DIR | 0o755, "open to other users (mode 0755)"),
    (DIR | 0o710, "mode 0710"),     # group may enter: files of known names are reachable
    (DIR | 0o701, "mode 0701"),
    (DIR | 0o720, "mode 0720"),
    (stat.S_IFREG | 0o600, "is not a directory"),
])
def test_open_directories_are_refused_naming_the_fix(mode, words):
    problem = data_dir_problem("/var/lib/tether", mode, owner=7, user=7)
    assert words in problem
    if "open" in words:
        assert problem.endswith("chmod 700 /var/lib/tether")


def test_a_directory_of_another_user_is_refused():
    assert "chown 7 /d" in data_dir_problem("/d", DIR | 0o700, owner=0, user=7)


@pytest.mark.parametrize("mode, expected", [
    (0o644, 0o600), (0o666, 0o600), (0o640, 0o600), (0o755, 0o700), (0o604, 0o600),
    (0o600, None), (0o400, None), (stat.S_IFREG | 0o644, 0o600),
])
def test_narrowed_keeps_the_owners_bits_only(mode, expected):
    assert narrowed(mode) == expected
