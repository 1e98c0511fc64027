# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""What the RDS modules share: the client and the outcome of an API error (their connection options are
AWS_ARGS of args_common.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib

try:
    import boto3
    import botocore.exceptions

    HAS_BOTO3 = True
except ImportError:  # reported by the module
    HAS_BOTO3 = False


def rds_client(params):
    """An RDS client; empty options fall back to boto3's defaults (AWS's endpoint, the credential chain)."""
    return boto3.client(
        "rds",
        region_name=params["region"],
        endpoint_url=params["endpoint_url"] or None,
        aws_access_key_id=params["access_key"] or None,
        aws_secret_access_key=params["secret_key"] or None,
    )


def instance_or_none(rds, identifier):
    """The DB instance, or None when there is none of that identifier."""
    try:
        return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "DBInstanceNotFound":
            raise
        return None


@contextlib.contextmanager
def rds_errors(module):
    """Fails the module on an RDS API error, with the outcome the driver maps to an exit code: an
    endpoint that cannot be reached is unreachable (exit 4), an unknown instance invalid (exit 2)."""
    try:
        yield
    except botocore.exceptions.EndpointConnectionError as exc:
        module.fail_json(msg="cannot reach RDS: %s" % exc, outcome="unreachable")
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        module.fail_json(msg="RDS: %s" % exc, outcome="invalid" if code == "DBInstanceNotFound" else "failed")
