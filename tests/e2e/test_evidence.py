"""evidence and evidence verify end to end: what a bundle holds, that no secret value is in it in any
encoding, its hashes and the timeline, a second capture beside the first, tampering found, the copy in
the bucket, check mode, bad input, and a capture that stops half-way."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest

from ansible_collections.emergency.ops.plugins.module_utils.evidence import NOT_SECRET_KEYS
from driver import ROOT
from tests.conftest import call, incident_id, wait_for
from tests.leaks import leaks

pytestmark = pytest.mark.usefixtures("target")


def admin(target, dbname="app"):
    pg = target.status["postgres"]
    return psycopg.connect(
        host=pg["host"],
        port=pg["port"],
        user=pg["admin_user"],
        password=Path(pg["admin_password_file"]).read_text().strip(),
        dbname=dbname,
        autocommit=True,
    )


def s3(target):
    s = target.status["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s["endpoint"],
        aws_access_key_id=s["access_key"],
        aws_secret_access_key=Path(s["secret_key_file"]).read_text().strip(),
        region_name=s["region"],
    )


@pytest.fixture
def planted(target):
    """Known secret values in a Secret of the namespace, copied where a careless capture would pick
    them up: a ConfigMap, a row of the database, a refused API key in the api's logs."""
    kube = target.kube()
    token, password = f"tok-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    url = f"postgres://leaky:{password}@db.internal:5432/app"
    data = {"token": token, "url": url}
    kube.create(
        "Secret",
        {
            "metadata": {"name": "evidence-plant"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )
    kube.create("ConfigMap", {"metadata": {"name": "evidence-plant"}, "data": {"note": f"copied {token}"}})
    with admin(target) as conn:
        conn.execute("CREATE TABLE evidence_plant (note text)")
        conn.execute("INSERT INTO evidence_plant VALUES (%s), (%s)", (f"token {token}", url))
    for _ in range(3):
        assert call(target, "/api/markets", token) == 401
    try:
        yield data
    finally:
        kube.delete("Secret", "evidence-plant")
        kube.delete("ConfigMap", "evidence-plant")
        with admin(target) as conn:
            conn.execute("DROP TABLE IF EXISTS evidence_plant")


def platform_secrets(target) -> dict[str, str]:
    """Every secret value of the sandbox's own Secrets (not a host, port or user name)."""
    kube = target.kube()
    values = {}
    for secret in kube.list("Secret"):
        for key, encoded in (secret.get("data") or {}).items():
            value = base64.b64decode(encoded).decode("utf-8", "replace")
            if len(value) >= 8 and key.lower() not in NOT_SECRET_KEYS:
                values[f"{secret['metadata']['name']}/{key}"] = value
    return values


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def unzipped(folder: Path) -> list[str]:
    return [gzip.decompress(p.read_bytes()).decode("utf-8", "replace") for p in folder.rglob("*.gz")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_bundle_holds_the_state_and_no_secret_value(driver, target, incidents, planted):
    secrets = {**platform_secrets(target), "planted token": planted["token"], "planted url": planted["url"]}
    assert {name.split("/")[0] for name in secrets} >= {"postgres-secret", "redis-secret", "api-keys"}
    incident = incident_id()
    run = driver("evidence", "--service", "api", "--incident", incident)
    assert run.rc == 0, run.stdout + run.stderr
    bundle = run.result["outputs"]["evidence"]["bundle"]
    folder = incidents / incident / "evidence" / "001"
    assert bundle["name"] == "001" and Path(bundle["path"]) == folder.resolve()

    # What it holds.
    names = {str(p.relative_to(folder)) for p in files_under(folder)}
    for expected in (
        "manifest.json",
        "auth.json",
        "kubernetes/workloads.json",
        "kubernetes/replicasets.json",
        "kubernetes/pods.json",
        "kubernetes/service.json",
        "kubernetes/ingress.json",
        "kubernetes/networkpolicy.json",
        "kubernetes/configmap.json",
        "kubernetes/secrets.json",
        "kubernetes/events.json",
        "database/pg_dump.sql.gz",
        "database/row_counts.json",
        "database/sessions.json",
        "redis/info.txt",
    ):
        assert expected in names, expected
    api_pods = [p["metadata"]["name"] for p in json.loads((folder / "kubernetes/pods.json").read_text())]
    assert len(api_pods) == 2 and all(n.startswith("api-") for n in api_pods)
    assert all(f"logs/{pod}/api.log" in names for pod in api_pods)
    workloads = json.loads((folder / "kubernetes/workloads.json").read_text())
    assert [w["metadata"]["name"] for w in workloads] == ["api"]
    events = json.loads((folder / "kubernetes/events.json").read_text())
    stamps = [
        e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"] for e in events
    ]
    assert stamps == sorted(stamps)
    kept = {s["name"]: s for s in json.loads((folder / "kubernetes/secrets.json").read_text())}
    assert kept["evidence-plant"]["keys"] == ["token", "url"] and "data" not in kept["evidence-plant"]
    assert "redis_version:" in (folder / "redis/info.txt").read_text()
    counts = json.loads((folder / "database/row_counts.json").read_text())
    assert counts["public.evidence_plant"] == 2
    [dump] = unzipped(folder)
    assert "CREATE TABLE public.evidence_plant" in dump and "[redacted evidence-plant/token]" in dump
    auth = json.loads((folder / "auth.json").read_text())
    assert sum(f["status_401"] for f in auth) >= 3, auth

    # No secret value anywhere: the bundle (and the dump inside its gzip), the incident's folder, the output.
    everything = files_under(incidents / incident)
    assert leaks(secrets, everything, [run.stdout, run.stderr, *unzipped(folder)]) == []

    # Private, hashed, and the manifest's hash on the timeline.
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["incident"] == incident and manifest["complete"] is True
    assert manifest["from"]["namespace"] == target.namespace and manifest["from"]["tools"]["pg_dump"]
    assert {f["path"] for f in manifest["files"]} == names - {"manifest.json"}
    for entry in manifest["files"]:
        assert sha256(folder / entry["path"]) == entry["sha256"]
        assert (folder / entry["path"]).stat().st_size == entry["size"]
    timeline = [
        json.loads(line) for line in (incidents / incident / "timeline.jsonl").read_text().splitlines()
    ]
    [recorded] = [e for e in timeline if e["event"] == "evidence"]
    assert recorded["manifest_sha256"] == sha256(folder / "manifest.json") == bundle["manifest_sha256"]


def test_a_second_capture_adds_a_bundle_and_verify_names_what_changed(driver, incidents):
    incident = incident_id()
    first = driver("evidence", "--service", "crank", "--no-data", "--incident", incident)
    assert first.rc == 0, first.stdout + first.stderr
    root = incidents / incident / "evidence"
    before = {p: sha256(p) for p in files_under(root / "001")}
    assert (root / "001/database/schema.sql").exists() and not (root / "001/database/pg_dump.sql.gz").exists()
    second = driver("evidence", "--service", "crank", "--since", "1h", "--incident", incident)
    assert second.rc == 0 and second.result["outputs"]["evidence"]["bundle"]["name"] == "002"
    assert {p: sha256(p) for p in files_under(root / "001")} == before  # never overwritten

    ok = driver("evidence", "verify", "--incident", incident)
    assert ok.rc == 0, ok.stdout + ok.stderr
    assert [b["name"] for b in ok.result["outputs"]["evidence_verify"]["verified"]] == ["001", "002"]

    changed = root / "001/kubernetes/pods.json"
    changed.write_text(changed.read_text().replace("crank", "crane"))
    (root / "002/logs/planted.log").write_text("added later\n")
    manifest = root / "002/manifest.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    bad = driver("evidence", "verify", "--incident", incident)
    assert bad.rc == 1
    problems = [p for b in bad.result["outputs"]["evidence_verify"]["verified"] for p in b["problems"]]
    assert any(str(changed) in p and "changed" in p for p in problems), problems
    assert any("planted.log" in p and "added" in p for p in problems), problems
    assert any(str(manifest) in p and "timeline" in p for p in problems), problems


def test_upload_copies_the_bundle_and_verify_checks_the_copy(driver, target, incidents):
    incident = incident_id()
    run = driver("evidence", "--service", "indexer", "--no-data", "--upload", "--incident", incident)
    assert run.rc == 0, run.stdout + run.stderr
    bundle = run.result["outputs"]["evidence"]["bundle"]
    bucket = target.status["s3"]["bucket"]
    assert bundle["uploaded_to"] == f"s3://{bucket}/evidence/{incident}/001/"
    client = s3(target)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"evidence/{incident}/001/")
    keys = {o["Key"].split("/001/", 1)[1] for o in listed.get("Contents", [])}
    local = {
        str(p.relative_to(incidents / incident / "evidence/001"))
        for p in files_under(incidents / incident / "evidence/001")
    }
    assert keys == local
    try:
        assert driver("evidence", "verify", "--incident", incident).rc == 0
        key = f"evidence/{incident}/001/auth.json"
        client.put_object(Bucket=bucket, Key=key, Body=b"[]\n[]\n")
        bad = driver("evidence", "verify", "--incident", incident)
        assert bad.rc == 1 and f"s3://{bucket}/{key} changed" in bad.stdout
    finally:
        for item in client.list_objects_v2(Bucket=bucket, Prefix=f"evidence/{incident}/").get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


def test_check_mode_writes_nothing(driver, incidents):
    incident = incident_id()
    run = driver("evidence", "--all", "--check", "--incident", incident)
    assert run.rc == 0, run.stdout + run.stderr
    assert not (incidents / incident / "evidence").exists()
    assert run.result["outputs"]["evidence"]["bundle"] == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (("--service", "ghost"), "ghost"),
        (("--service", "api", "--since", "yesterday"), "--since"),
        ((), "exactly one of"),
        (("--service", "api", "--all"), "exactly one of"),
    ],
)
def test_bad_input_exits_2_before_anything_runs(driver, incidents, args, message):
    incident = incident_id()
    run = driver("evidence", *args, "--incident", incident, json_output=False)
    assert run.rc == 2 and message in run.stderr, run.stderr
    assert not (incidents / incident / "evidence").exists()


def test_a_capture_that_stops_half_way_keeps_what_it_took_sealed(driver, target, incidents, tmp_path):
    """Redis unreachable after the cluster's part is taken: the bundle is kept, marked incomplete, its
    hash on the timeline, verify finds it intact; nothing on the platform changed."""
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    with open(inventory / "group_vars" / "all" / "zz-redis.yml", "w") as handle:
        handle.write("---\nplatform_redis:\n  url: redis://127.0.0.1:9/0\n")
    incident = incident_id()
    kube = target.kube()
    replicas = kube.get("Deployment", "api")["spec"]["replicas"]
    run = driver("evidence", "--service", "api", "--incident", incident, "--inventory", str(inventory))
    assert run.rc == 4, run.stdout + run.stderr  # unreachable
    folder = incidents / incident / "evidence" / "001"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False and "Redis" in manifest["error"]
    assert (folder / "kubernetes/pods.json").exists() and (folder / "database/row_counts.json").exists()
    timeline = (incidents / incident / "timeline.jsonl").read_text()
    assert sha256(folder / "manifest.json") in timeline
    assert driver("evidence", "verify", "--incident", incident).rc == 0
    assert kube.get("Deployment", "api")["spec"]["replicas"] == replicas
    wait_for(lambda: call(target, "/health/ready") == 200, what="the api still serving")
    assert os.listdir(incidents / incident / "evidence") == ["001"]
