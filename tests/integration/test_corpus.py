"""The corpus (issue 11): every real Istio and Linkerd document under tests/corpus, applied
alone and in file order through the real HTTP API (the routes and parsers `tether apply -f`
uses), has exactly the outcome MANIFEST.yaml records beside its source: honoured (accepted
without a warning; for external services, what proxies are served), warned about (accepted,
with that warning), or refused (400, naming the field). A fresh agent per file."""

from __future__ import annotations

import httpx
import pytest
import yaml

from corpus_kit import CORPUS, apply_one, documents
from tether.testing.agent import open_in_process

MANIFEST = yaml.safe_load((CORPUS / "MANIFEST.yaml").read_text())


def test_the_corpus_is_large_enough_and_every_file_and_document_has_its_outcome():
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.y*ml")} - {"MANIFEST.yaml"}
    assert files == {e["file"] for e in MANIFEST}
    for entry in MANIFEST:
        assert {"repo", "path", "commit"} <= set(entry["source"]), entry["file"]
        assert [d["n"] for d in entry["documents"]] == [n for n, _ in documents(entry["file"])], entry["file"]
        for d in entry["documents"]:
            assert len({"honoured", "warned", "refused"} & set(d)) == 1, (entry["file"], d)
    assert sum(len(e["documents"]) for e in MANIFEST) >= 60


def served_summary(doc: dict) -> dict:
    spec = doc["spec"]
    return {"name": doc["metadata"]["name"], "hosts": spec.get("hosts", []),
            "ports": [f"{p['number']}/{p['protocol']}" for p in spec["ports"]], "addresses": len(spec.get("addresses", []))}


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
async def test_each_document_has_its_recorded_outcome(entry):
    async with open_in_process("dev", node="corpus") as running, \
            httpx.AsyncClient(base_url=running.url, timeout=30) as api:
        for r in entry.get("register", []):
            reg = await api.put("/v1/agent/service/register", json={"Name": r["name"], "Port": r["port"], "Meta": r["meta"]})
            assert reg.status_code == 200, reg.text
        expected = {d["n"]: d for d in entry["documents"]}
        for n, doc in documents(entry["file"]):
            want = expected[n]
            status, warnings, text = await apply_one(api, doc)
            where = f"{entry['file']} document {n} ({want['kind']} {want['name']})"
            if "refused" in want:
                assert status == 400 and want["refused"] in text, f"{where}: {status} {text}"
                continue
            assert status == 200, f"{where}: {text}"
            if "warned" in want:
                assert any(want["warned"] in w for w in warnings), f"{where}: {warnings}"
                continue
            assert warnings == [], f"{where}: {warnings}"
            if "served" in want:
                served = (await api.get("/v1/tether/egress")).json()["Services"]
                got = [served_summary(d) for d in served if d["metadata"]["name"] == want["served"]["name"]]
                assert got and {k: got[0][k] for k in want["served"]} == want["served"], f"{where}: {got}"
