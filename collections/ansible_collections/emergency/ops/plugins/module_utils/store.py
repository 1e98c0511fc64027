# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""The S3 backup store: backup ids, the manifest, the bucket, and finding and fetching a backup.

A backup lives in the bucket under ``<prefix>/<id>/``: the files of a directory-format ``pg_dump``
under ``dump/`` and, written last, ``manifest.json``. A backup without a manifest is incomplete (its
run was interrupted) and is never restored. Ids are UTC times with microseconds
(``20261123T081512.123456Z``): sorted as strings they are in time order, so backups are ordered by
id, never by S3's LastModified, which has one-second resolution.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import datetime
import hashlib
import json
import os
import re

try:
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    HAS_BOTO3 = True
except ImportError:  # reported by the module
    HAS_BOTO3 = False

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, parse_when
from ansible_collections.emergency.ops.plugins.module_utils.times import utcnow

ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "emergency-ops/backup-manifest/v1"
CHUNK = 1024 * 1024


def new_backup_id(moment=None):
    return (moment or utcnow()).strftime(ID_FORMAT)


def backup_time(backup_id):
    return datetime.datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=datetime.timezone.utc)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """The backup bucket. Every call raises ``Failure``: unreachable, or invalid for a missing bucket."""

    def __init__(
        self,
        bucket,
        prefix="postgres",
        endpoint_url=None,
        region="us-east-1",
        access_key=None,
        secret_key=None,
        **_ignored,
    ):
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        config = BotoConfig(
            connect_timeout=5,
            read_timeout=120,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=16,
        )
        kwargs = dict(region_name=region, endpoint_url=endpoint_url or None, config=config)
        if access_key and secret_key:
            kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self.s3 = boto3.client("s3", **kwargs)
        self.endpoint = endpoint_url or "s3.%s.amazonaws.com" % region

    def key(self, *parts):
        return "/".join([p for p in (self.prefix, *parts) if p])

    def call(self, what, function, **kwargs):
        try:
            return function(**kwargs)
        except EndpointConnectionError as exc:
            raise Failure(
                "cannot reach the backup store %s: %s" % (self.endpoint, exc), "unreachable"
            ) from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",):
                raise Failure(
                    "bucket %s does not exist at %s" % (self.bucket, self.endpoint), "invalid"
                ) from exc
            if code in ("NoSuchKey", "404"):
                raise
            raise Failure("%s: %s" % (what, exc)) from exc
        except BotoCoreError as exc:  # timeouts, broken connections
            raise Failure(
                "cannot reach the backup store %s: %s" % (self.endpoint, exc), "unreachable"
            ) from exc

    def check(self):
        self.call("read the bucket", self.s3.head_bucket, Bucket=self.bucket)

    def backup_ids(self):
        """Every backup id under the prefix, complete or not, oldest first (ordered by id)."""
        ids = []
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self.call(
            "list backups",
            lambda: list(
                paginator.paginate(
                    Bucket=self.bucket, Prefix=self.key("") + "/" if self.prefix else "", Delimiter="/"
                )
            ),
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if ID_PATTERN.match(name):
                    ids.append(name)
        return sorted(ids)

    def manifest(self, backup_id):
        try:
            body = self.call(
                "read manifest", self.s3.get_object, Bucket=self.bucket, Key=self.key(backup_id, MANIFEST)
            )["Body"].read()
        except ClientError:
            return None
        return json.loads(body)

    def complete_backups(self, newest_first=True, limit=None):
        """Yields ``(id, manifest)`` of complete backups, newest first by default."""
        ids = self.backup_ids()
        found = 0
        for backup_id in reversed(ids) if newest_first else ids:
            manifest = self.manifest(backup_id)
            if manifest is None:
                continue
            yield backup_id, manifest
            found += 1
            if limit and found >= limit:
                return

    def upload(self, path, key, sha256):
        self.call(
            "upload %s" % key,
            self.s3.upload_file,
            Filename=path,
            Bucket=self.bucket,
            Key=key,
            ExtraArgs={"Metadata": {"sha256": sha256}},
        )

    def put_json(self, key, document):
        self.call(
            "write %s" % key,
            self.s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )

    def download_verified(self, key, path, sha256, size):
        """Streams one object to ``path`` hashing it on the way; returns the error or None."""
        response = self.call("download %s" % key, self.s3.get_object, Bucket=self.bucket, Key=key)
        digest, length = hashlib.sha256(), 0
        with open(path, "wb") as handle:
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                length += len(chunk)
        if length != size or digest.hexdigest() != sha256:
            return "%s: sha256 %s size %d, manifest says sha256 %s size %d" % (
                key,
                digest.hexdigest(),
                length,
                sha256,
                size,
            )
        return None

    def delete_backup(self, backup_id):
        """Deletes every object of one backup, the manifest first so it is never half-listed as complete."""
        self.call(
            "delete manifest", self.s3.delete_object, Bucket=self.bucket, Key=self.key(backup_id, MANIFEST)
        )
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self.call(
            "list %s" % backup_id,
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.key(backup_id) + "/")),
        )
        keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.call(
                "delete %s" % backup_id,
                self.s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": keys[start : start + 1000], "Quiet": True},
            )
        return len(keys) + 1


def store_from(params):
    return Store(**params)


def describe(backup_id, manifest):
    return {
        "id": backup_id,
        "database": manifest.get("database"),
        "created_at": manifest.get("created_at"),
        "server_version": manifest.get("server_version"),
        "incident": manifest.get("incident"),
        "objects": len(manifest.get("objects", {})),
        "bytes": sum(o["size"] for o in manifest.get("objects", {}).values()),
        "row_counts": manifest.get("row_counts", {}),
    }


def resolve(store, backup, before):
    newest = [i for i, _m in store.complete_backups(limit=5)]
    if before:
        moment = parse_when(before)
        for backup_id, manifest in store.complete_backups():
            if backup_time(backup_id) < moment:
                return describe(backup_id, manifest), newest
        raise Failure(
            "no complete backup made before %s; newest: %s"
            % (moment.isoformat(), ", ".join(newest) or "none"),
            "invalid",
        )
    if backup in (None, "", "latest"):
        if not newest:
            raise Failure("the backup store holds no complete backup", "invalid")
        return describe(newest[0], store.manifest(newest[0])), newest
    if not ID_PATTERN.match(backup):
        raise Failure(
            "%r is not a backup id (like 20261123T081512.123456Z); newest: %s"
            % (backup[:40], ", ".join(newest) or "none"),
            "invalid",
        )
    manifest = store.manifest(backup)
    if manifest is None:
        raise Failure(
            "no complete backup %s in the store; newest: %s" % (backup, ", ".join(newest) or "none"),
            "invalid",
        )
    return describe(backup, manifest), newest


def fetch(store, backup_id, dest, check_mode):
    manifest = store.manifest(backup_id)
    if manifest is None:
        raise Failure("no complete backup %s in the store" % backup_id, "invalid")
    if check_mode:
        return describe(backup_id, manifest)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    jobs = []
    for name, meta in sorted(manifest["objects"].items()):
        path = os.path.join(dest, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        jobs.append((store.key(backup_id, name), path, meta["sha256"], meta["size"]))
    # Each object is hashed while it streams in (one pass); several stream at once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(lambda job: store.download_verified(*job), jobs) if p]
    if problems:
        raise Failure(
            "backup %s failed its checksum verification; no database was touched: %s"
            % (backup_id, "; ".join(problems[:5])),
            "refused",
        )
    return describe(backup_id, manifest)
