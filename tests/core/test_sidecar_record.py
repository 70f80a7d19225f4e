"""Sidecar records and the adoption decision of a restarted agent (core/sidecar_record.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.sidecar_record import (
    ProcessFacts, SidecarRecord, decide_adoption, format_record, parse_environ, parse_proc_stat, parse_record,
    record_filename,
)

CMD = ("/usr/bin/python3", "-m", "tether.cli.main", "connect", "proxy", "-sidecar-for", "web")
REC = SidecarRecord("web-sidecar-proxy", 4242, 123456, "boot-a", "127.0.0.1:8500", CMD)
SAME = ProcessFacts(True, 123456, "boot-a", "web-sidecar-proxy")


@pytest.mark.parametrize("now, wanted, addr, action, why", [
    # step 1: is it still that process?
    (ProcessFacts(False), CMD, "127.0.0.1:8500", "forget", "not running"),
    (ProcessFacts(True, 123456, "boot-b", "web-sidecar-proxy"), CMD, "127.0.0.1:8500", "forget", "rebooted"),
    (ProcessFacts(True, 999999, "boot-a", "web-sidecar-proxy"), CMD, "127.0.0.1:8500", "forget", "another process"),
    (ProcessFacts(True, 123456, "boot-a", None), CMD, "127.0.0.1:8500", "forget", "is not the proxy"),
    (ProcessFacts(True, 123456, "boot-a", "db-sidecar-proxy"), CMD, "127.0.0.1:8500", "forget", "is not the proxy"),
    # a recycled PID is forgotten even when the registration is gone: never signal a stranger
    (ProcessFacts(True, 999999, "boot-a", None), None, "127.0.0.1:8500", "forget", "another process"),
    # step 2: ours, registration gone (an in-memory dev agent restarted)
    (SAME, None, "127.0.0.1:8500", "stop", "registration is gone"),
    # step 3: ours, but it cannot follow this agent
    (SAME, CMD, "127.0.0.1:8600", "stop", "follows the agent at 127.0.0.1:8500"),
    (SAME, CMD[:-1] + ("api",), "127.0.0.1:8500", "stop", "another command"),
    # step 4
    (SAME, CMD, "127.0.0.1:8500", "adopt", "still running"),
])
def test_decide_adoption(now, wanted, addr, action, why):
    verdict = decide_adoption(REC, now, wanted_command=wanted, agent_addr=addr)
    assert (verdict.action, why in verdict.reason) == (action, True), verdict


records = st.builds(SidecarRecord, st.text(min_size=1), st.integers(2, 2**31), st.integers(0, 2**62),
                    st.text(), st.text(), st.lists(st.text()).map(tuple))


@given(records)
def test_records_round_trip(rec):
    assert parse_record(json.loads(json.dumps(format_record(rec)))) == rec


@pytest.mark.parametrize("doc", ["", [], {"version": 2}, {"version": 1, "pid": "x"}, {**format_record(REC), "pid": 1},
                                 {**format_record(REC), "command": None}, {**format_record(REC), "proxy_id": ""}])
def test_bad_records_are_refused(doc):
    with pytest.raises(ValueError):
        parse_record(doc)


@given(st.text(min_size=1))
def test_record_file_names_stay_in_their_directory(proxy_id):
    name = record_filename(proxy_id)
    assert "/" not in name and "\0" not in name and name.endswith(".json") and not name.startswith(".")


@pytest.mark.parametrize("proxy_id", [".", "..", "../x", ".hidden", "a/../../b"])
def test_dots_and_slashes_are_quoted(proxy_id):
    name = record_filename(proxy_id)
    assert "/" not in name and not name.startswith(".") and name.count(".") == 1


def test_different_ids_get_different_files():
    assert len({record_filename(i) for i in ("a/b", "a%2Fb", "a_b", "a-b", "..", "a.b")}) == 6


@given(comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=15))
def test_proc_stat_start_time_whatever_the_command_name(comm):
    text = f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 18446744073709551615 0\n"
    assert parse_proc_stat(text) == ("S", 98765)


def test_proc_stat_noise_is_a_value_error():
    with pytest.raises(ValueError):
        parse_proc_stat("not a stat line")


def test_environ():
    assert parse_environ(b"A=1\0CONNECT_PROXY_ID=web-sidecar-proxy\0EMPTY=\0junk\0") == {
        "A": "1", "CONNECT_PROXY_ID": "web-sidecar-proxy", "EMPTY": ""}
