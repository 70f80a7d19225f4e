"""schemathesis, a fuzzer nobody here wrote, against /openapi.json of a dev agent with ACLs
on (and the management token, so the ACL routes are exercised too): no operation answers a
5xx. Bounded: a few examples per operation, one worker, a fixed seed, and a timeout on the
run. The document's own claims are checked too (no FastAPI 422s: errors are text/plain);
the conformance findings left are listed in docs/api.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tether.testing.agent import start_acl_dev_agent
from tether.testing.deps import missing

MANAGEMENT = "11111111-2222-3333-4444-555555555555"
#: The bound of the whole run; at 5 examples an operation it takes well under a minute.
RUN_TIMEOUT = 400


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory):
    agent = start_acl_dev_agent(tmp_path_factory.mktemp("schemathesis"), MANAGEMENT, default_policy="deny")
    yield agent
    agent.stop()


def test_the_document_declares_text_errors_not_fastapis_422(acl_agent):
    doc = httpx.get(acl_agent.url + "/openapi.json", timeout=10).json()
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) > 50
    for path, method, op in operations:
        assert "422" not in op["responses"], (method, path)
        assert set(op["responses"]) >= {"4XX", "503"}, (method, path)
        assert "text/plain" in op["responses"]["4XX"]["content"]
    assert "HTTPValidationError" not in json.dumps(doc)
    pass_params = doc["paths"]["/v1/agent/check/pass/{check_id}"]["put"]["parameters"]
    assert [p["name"] for p in pass_params] == ["check_id"]  # no `_status` leaking from the handler


def test_a_ttl_pass_cannot_be_turned_into_a_fail_by_a_query(acl_agent):
    """The `_status` parameter the document used to publish: /pass?_status=critical failed the check."""
    api = httpx.Client(base_url=acl_agent.url, headers={"X-Consul-Token": MANAGEMENT}, timeout=10)
    api.put("/v1/agent/check/register", json={"Name": "ttl", "CheckID": "ttl", "TTL": "60s"}).raise_for_status()
    api.put("/v1/agent/check/pass/ttl", params={"_status": "critical"}).raise_for_status()
    assert api.get("/v1/agent/checks").json()["ttl"]["Status"] == "passing"


def test_a_405_names_every_method_the_path_takes(acl_agent):
    """Starlette's Allow named only the first route that matched: GET for /v1/kv/x."""
    r = httpx.request("TRACE", acl_agent.url + "/v1/kv/x", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PUT"


def test_schemathesis_finds_no_server_error(acl_agent, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip(missing("schemathesis"))
    cmd = [st, "run", acl_agent.url + "/openapi.json", "--checks", "not_a_server_error", "--max-examples", "5",
           "--phases", "coverage,fuzzing", "--workers", "1", "--seed", "10", "--max-failures", "20",
           "--header", f"X-Consul-Token: {MANAGEMENT}", "--no-color"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path)
    assert r.returncode == 0 and "Server error" not in r.stdout, r.stdout[-6000:] + r.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", r.stdout)
    assert tested and int(tested.group(1)) > 50, r.stdout[-3000:]  # it reached the operations
