"""`db-failover` against the sandbox's moto server (RDS API) and Kubernetes API, with the RDS-shaped
inventory `inventories/sandbox-rds`. The fixture creates the primary, its read replica and the
application's database Secret; the tests assert the instances' state, the Secret's values and the
writers' restarts. (moto keeps ReadReplicaSourceDBInstanceIdentifier after a promotion, so the
promotion is asserted through the incident tag and the Secret, not that field.)"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import uuid
from pathlib import Path

import boto3
import pytest

from driver import ROOT
from tests.conftest import incident_id
from tests.e2e.test_restart import heal, set_image

INVENTORY = str(ROOT / "inventories" / "sandbox-rds")
PRIMARY, REPLICA, SECRET = "matchbook-db", "matchbook-db-replica", "postgres-rds-secret"
TAG = "emergency-ops/failover-incident"


@pytest.fixture(scope="module")
def rds(target):
    if target.status is None:
        pytest.fail("the RDS tests need the sandbox's moto server")
    s3 = target.status["s3"]
    return boto3.client(
        "rds",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
    )


def endpoint(rds, name: str) -> str:
    found = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["Endpoint"]
    return f"{found['Address']}:{found['Port']}"


def tags(rds, name: str) -> dict:
    arn = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["DBInstanceArn"]
    return {t["Key"]: t["Value"] for t in rds.list_tags_for_resource(ResourceName=arn)["TagList"]}


def secret_values(target) -> dict:
    data = target.kube().get("Secret", SECRET)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture
def platform(target, rds):
    """A primary with a read replica, and the application's Secret pointing at the primary."""
    password = secrets.token_urlsafe(18)
    rds.create_db_instance(
        DBInstanceIdentifier=PRIMARY,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        MasterUsername="app",
        MasterUserPassword=password,
        AllocatedStorage=20,
        DBName="app",
    )
    rds.create_db_instance_read_replica(DBInstanceIdentifier=REPLICA, SourceDBInstanceIdentifier=PRIMARY)
    host, port = endpoint(rds, PRIMARY).split(":")
    values = {
        "host": host,
        "port": port,
        "username": "app",
        "password": password,
        "url": f"postgresql://app:{password}@{host}:{port}/app",
    }
    kube = target.kube()
    kube.create(
        "Secret",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": target.namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        },
    )
    try:
        yield values
    finally:
        kube.delete("Secret", SECRET)
        for name in (REPLICA, PRIMARY):
            rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)


def revisions(target) -> dict:
    kube = target.kube()
    return {
        name: kube.get("Deployment", name)["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
        for name in ("indexer", "api", "crank")
    }


def test_failover_first_and_second_run(driver, target, rds, platform, incidents):
    incident = incident_id()
    before = revisions(target)
    replica_endpoint = endpoint(rds, REPLICA)

    first = driver("db-failover", "--incident", incident, "--yes", "--inventory", INVENTORY)
    assert first.rc == 0, first.stderr + first.stdout
    assert first.result["changed"] is True
    assert tags(rds, REPLICA).get(TAG) == incident
    assert (
        rds.describe_db_instances(DBInstanceIdentifier=REPLICA)["DBInstances"][0]["DBInstanceStatus"]
        == "available"
    )
    values = secret_values(target)
    assert f"{values['host']}:{values['port']}" == replica_endpoint
    assert values["url"] == f"postgresql://app:{platform['password']}@{replica_endpoint}/app"
    assert values["password"] == platform["password"]
    # The old primary is kept.
    assert (
        rds.describe_db_instances(DBInstanceIdentifier=PRIMARY)["DBInstances"][0]["DBInstanceStatus"]
        == "available"
    )
    after = revisions(target)
    assert all(int(after[name]) > int(before[name]) for name in before)
    prior = first.result["prior_state"]
    assert prior["secret"]["host"] == platform["host"]
    assert prior["primary"]["endpoint"] == endpoint(rds, PRIMARY)

    second = driver("db-failover", "--incident", incident, "--yes", "--inventory", INVENTORY)
    assert second.rc == 0, second.stderr + second.stdout
    assert second.result["changed"] is False
    assert revisions(target) == after
    assert secret_values(target) == values

    # The database password is in no output or file.
    written = [p.read_text(errors="replace") for p in incidents.rglob("*") if p.is_file()]
    for text in [first.stdout, first.stderr, second.stdout, second.stderr, *written]:
        assert platform["password"] not in text


def test_check_mode_changes_nothing(driver, target, rds, platform):
    before = revisions(target)
    run = driver("db-failover", "--incident", incident_id(), "--check", "--inventory", INVENTORY)
    assert run.rc == 0, run.stderr + run.stdout
    assert run.result["outputs"]["db_failover"]["promoted"]["id"] == REPLICA
    assert TAG not in tags(rds, REPLICA)
    assert secret_values(target)["host"] == platform["host"]
    assert revisions(target) == before


def test_bad_input_exits_2(driver, platform):
    run = driver("db-failover", "--incident", "bad id!", "--yes", "--inventory", INVENTORY)
    assert run.rc == 2


def inventory_with(tmp_path: Path, old: str, new: str) -> str:
    """A copy of the RDS inventory with one text of its rds.yml replaced."""
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text((Path(INVENTORY) / "hosts.yml").read_text())
    (inventory / "group_vars" / "all" / "platform.yml").write_text(
        (ROOT / "inventories" / "sandbox" / "group_vars" / "all" / "platform.yml").read_text()
    )
    text = (Path(INVENTORY) / "group_vars" / "all" / "rds.yml").read_text()
    assert old in text
    (inventory / "group_vars" / "all" / "rds.yml").write_text(text.replace(old, new))
    return str(inventory)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


UNREACHABLE_API = (
    'endpoint_url: "{{ sandbox_endpoints.s3.endpoint }}"',
    "endpoint_url: http://127.0.0.1:{port}",
)


def test_unknown_replica_fails_before_changing_anything(driver, target, rds, platform, tmp_path):
    inventory = inventory_with(tmp_path, f"replica: {REPLICA}", "replica: nope")
    before = revisions(target)
    run = driver("db-failover", "--incident", incident_id(), "--yes", "--inventory", inventory)
    assert run.rc == 2, json.dumps(run.result["errors"])
    assert secret_values(target)["host"] == platform["host"]
    assert revisions(target) == before
    # The lock was released and the real replica can still be promoted.
    retry = driver("db-failover", "--incident", incident_id(), "--yes", "--inventory", INVENTORY)
    assert retry.rc == 0, retry.stderr + retry.stdout
    assert secret_values(target)["host"] == endpoint(rds, REPLICA).split(":")[0]


def test_failover_with_the_rds_api_unreachable_exits_4_and_changes_nothing(
    driver, target, rds, platform, tmp_path
):
    old, new = UNREACHABLE_API
    inventory = inventory_with(tmp_path, old, new.format(port=closed_port()))
    before = revisions(target)
    run = driver("db-failover", "--incident", incident_id(), "--yes", "--inventory", inventory)
    assert run.rc == 4, run.stderr + run.stdout
    assert run.result["changed"] is False
    assert run.result["errors"][0]["kind"] == "unreachable"
    assert TAG not in tags(rds, REPLICA)
    assert secret_values(target)["host"] == platform["host"]
    assert revisions(target) == before


# restore --from-snapshot: the snapshot is restored into a new instance named after the incident.
RESTORE_TAG, FROM_TAG = "emergency-ops/restore-incident", "emergency-ops/restored-from"


def restored_name(incident: str) -> str:
    return f"{PRIMARY}-restore-{incident.lower()}"


def instance_ids(rds) -> set:
    return {db["DBInstanceIdentifier"] for db in rds.describe_db_instances()["DBInstances"]}


@pytest.fixture
def snapshot(rds, platform):
    """The platform above plus a manual snapshot of the primary (its newest); restored instances go after."""
    name = f"{PRIMARY}-manual-{uuid.uuid4().hex[:6]}"
    before = instance_ids(rds)
    rds.create_db_snapshot(DBInstanceIdentifier=PRIMARY, DBSnapshotIdentifier=name)
    try:
        yield name
    finally:
        for created in instance_ids(rds) - before:
            rds.delete_db_instance(DBInstanceIdentifier=created, SkipFinalSnapshot=True)
        rds.delete_db_snapshot(DBSnapshotIdentifier=name)


def restore_snapshot(driver, incident: str, snapshot: str, *extra: str, inventory: str = INVENTORY):
    return driver(
        "restore", "--from-snapshot", snapshot, "--incident", incident, *extra, "--inventory", inventory
    )


def test_restore_from_snapshot_first_and_second_run(driver, target, rds, platform, snapshot, incidents):
    incident = incident_id()
    new = restored_name(incident)
    primary_endpoint = endpoint(rds, PRIMARY)
    before = revisions(target)

    first = restore_snapshot(driver, incident, "latest", "--yes")
    assert first.rc == 0, first.stderr + first.stdout
    assert first.result["changed"] is True
    found = rds.describe_db_instances(DBInstanceIdentifier=new)["DBInstances"][0]
    assert found["DBInstanceStatus"] == "available"
    assert tags(rds, new) == {RESTORE_TAG: incident, FROM_TAG: snapshot}
    new_endpoint = endpoint(rds, new)
    values = secret_values(target)
    assert f"{values['host']}:{values['port']}" == new_endpoint
    assert values["url"] == f"postgresql://app:{platform['password']}@{new_endpoint}/app"
    assert values["password"] == platform["password"]
    annotations = target.kube().get("Secret", SECRET)["metadata"]["annotations"]
    assert annotations["emergency.ops/restore-snapshot-incident"] == incident
    assert annotations["emergency.ops/restore-snapshot-previous-host"] == platform["host"]
    # The old instance is kept as it was.
    old = rds.describe_db_instances(DBInstanceIdentifier=PRIMARY)["DBInstances"][0]
    assert old["DBInstanceStatus"] == "available" and endpoint(rds, PRIMARY) == primary_endpoint
    after = revisions(target)
    assert all(int(after[name]) > int(before[name]) for name in before)
    prior = first.result["prior_state"]
    assert prior["instance"] == {"id": PRIMARY, "status": "available", "endpoint": primary_endpoint}
    assert prior["secret"]["host"] == platform["host"]
    assert platform["password"] not in prior["secret"]["url"]

    ids = instance_ids(rds)
    second = restore_snapshot(driver, incident, "latest", "--yes")
    assert second.rc == 0, second.stderr + second.stdout
    assert second.result["changed"] is False
    assert instance_ids(rds) == ids
    assert secret_values(target) == values
    assert revisions(target) == after

    written = [p.read_text(errors="replace") for p in incidents.rglob("*") if p.is_file()]
    for text in [first.stdout, first.stderr, second.stdout, second.stderr, *written]:
        assert platform["password"] not in text


def test_restore_from_snapshot_check_mode_creates_nothing(driver, target, rds, platform, snapshot):
    ids, before = instance_ids(rds), revisions(target)
    run = restore_snapshot(driver, incident_id(), snapshot, "--check")
    assert run.rc == 0, run.stderr + run.stdout
    assert run.result["outputs"]["restore"]["snapshot"]["id"] == snapshot
    assert instance_ids(rds) == ids
    assert secret_values(target)["host"] == platform["host"]
    assert revisions(target) == before


def test_restore_from_unknown_snapshot_exits_2_listing_ids(driver, target, rds, platform, snapshot):
    ids = instance_ids(rds)
    run = restore_snapshot(driver, incident_id(), "no-such-snapshot", "--yes")
    assert run.rc == 2, run.stderr + run.stdout
    assert snapshot in json.dumps(run.result["errors"])
    assert instance_ids(rds) == ids
    assert secret_values(target)["host"] == platform["host"]


def test_restore_from_snapshot_failing_writers_restart_puts_the_secret_back(
    driver, target, rds, platform, snapshot
):
    kube = target.kube()
    incident = incident_id()
    set_image(kube, "crank", "broken")
    try:
        run = restore_snapshot(driver, incident, snapshot, "--yes")
        assert run.rc not in (0, 2), run.stderr + run.stdout
        values = secret_values(target)
        assert {k: values[k] for k in ("host", "port", "url")} == {
            k: platform[k] for k in ("host", "port", "url")
        }
        annotations = kube.get("Secret", SECRET)["metadata"].get("annotations") or {}
        assert "emergency.ops/restore-snapshot-incident" not in annotations
        assert run.result["outputs"]["restore"]["secret_put_back"] is True
        # The new instance is kept for a re-run, the old one is untouched.
        assert tags(rds, restored_name(incident))[RESTORE_TAG] == incident
        assert rds.describe_db_instances(DBInstanceIdentifier=PRIMARY)["DBInstances"][0][
            "DBInstanceStatus"
        ] == ("available")
    finally:
        heal(kube, "crank")
    # Once the writer is healed, a re-run of the incident converges on the instance it created.
    retry = restore_snapshot(driver, incident, snapshot, "--yes")
    assert retry.rc == 0, retry.stderr + retry.stdout
    assert secret_values(target)["host"] == endpoint(rds, restored_name(incident)).split(":")[0]


def test_restore_from_snapshot_with_the_rds_api_unreachable_exits_4(
    driver, target, rds, platform, snapshot, tmp_path
):
    old, new = UNREACHABLE_API
    inventory = inventory_with(tmp_path, old, new.format(port=closed_port()))
    ids, before = instance_ids(rds), revisions(target)
    run = restore_snapshot(driver, incident_id(), "latest", "--yes", inventory=inventory)
    assert run.rc == 4, run.stderr + run.stdout
    assert run.result["errors"][0]["kind"] == "unreachable"
    assert instance_ids(rds) == ids
    assert secret_values(target)["host"] == platform["host"]
    assert revisions(target) == before


def test_awx_template_runs_in_check_mode_with_its_survey_answers(target, rds, platform, tmp_path):
    """db-failover's job template as AWX runs it (see test_awx_templates.py), on the RDS inventory."""
    from tests.e2e.test_awx_templates import TEMPLATES, assert_read_the_answers, run_in_check_mode

    before = secret_values(target)
    assert_read_the_answers(run_in_check_mode(TEMPLATES["db-failover"], INVENTORY, target.env, tmp_path))
    assert secret_values(target) == before
