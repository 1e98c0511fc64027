# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""The options several modules take, in one place, as kubernetes.core's ``args_common`` holds them.

Each dict maps option names to their argument spec and is documented by the doc fragment named after it
(``plugins/doc_fragments/``): a module that merges a dict into its ``argument_spec`` lists that fragment
in ``extends_documentation_fragment``, so ansible-doc and validate-modules see the same options the
module takes. Options only one module takes, or that mean something else in one module, stay in it.

===================== ======================================= ================================
dict                  options                                 fragment
===================== ======================================= ================================
KUBE_CLUSTER_ARGS     kubeconfig, context                     emergency.ops.kube.cluster
KUBE_ARGS             kubeconfig, context, namespace          emergency.ops.kube
AWS_ARGS              region, endpoint_url, access_key,       emergency.ops.aws
                      secret_key
BACKUP_STORE_ARGS     store                                   emergency.ops.backup_store
DATABASE_ARGS         database                                emergency.ops.database
SERVICES_ARGS         services                                emergency.ops.services
SIDE_RESTORE_ARGS     keep_as, owner, client_bin,             emergency.ops.side_restore
                      smoke_queries, namespace, writers,
                      incident
===================== ======================================= ================================

``no_log`` is set here, on the secrets, and never in a fragment: it belongs to the argument spec only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# One workload, as the modules name it: the suboptions of SERVICES_ARGS, of migration_state's service
# and of the restores' writers.
WORKLOAD_OPTIONS = dict(
    name=dict(type="str", required=True),
    kind=dict(type="str", default="Deployment", choices=["Deployment", "StatefulSet"]),
)

# The cluster, for node_drain (Nodes are cluster-scoped) and for the modules that say in their own words
# what their namespace is (doc_fragments/kube.py, CLUSTER).
KUBE_CLUSTER_ARGS = dict(
    kubeconfig=dict(type="path"),
    context=dict(type="str"),
)

# The cluster and the namespace of the workloads (doc_fragments/kube.py, DOCUMENTATION).
KUBE_ARGS = dict(
    KUBE_CLUSTER_ARGS,
    namespace=dict(type="str", required=True),
)

# RDS (doc_fragments/aws.py).
AWS_ARGS = dict(
    region=dict(type="str", required=True),
    endpoint_url=dict(type="str", default=""),
    access_key=dict(type="str", default="", no_log=False),
    secret_key=dict(type="str", default="", no_log=True),
)

# The S3 backup store (doc_fragments/backup_store.py).
BACKUP_STORE_ARGS = dict(
    store=dict(
        type="dict",
        required=True,
        options=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default="postgres"),
            endpoint_url=dict(type="str"),
            region=dict(type="str", default="us-east-1"),
            access_key=dict(type="str", no_log=True),
            secret_key=dict(type="str", no_log=True),
        ),
    ),
)

# A PostgreSQL server and one of its databases (doc_fragments/database.py).
DATABASE_ARGS = dict(
    database=dict(
        type="dict",
        required=True,
        options=dict(
            host=dict(type="str", required=True),
            port=dict(type="int", default=5432),
            name=dict(type="str", required=True),
            user=dict(type="str", required=True),
            password=dict(type="str", no_log=True, default=""),
            sslmode=dict(type="str", default="prefer"),
        ),
    ),
)

# The workloads a module acts on, in order (doc_fragments/services.py).
SERVICES_ARGS = dict(
    services=dict(type="list", elements="dict", required=True, options=WORKLOAD_OPTIONS),
)

# What db_restore and pg_pitr share beside the database and the cluster (doc_fragments/side_restore.py).
# Their side, workdir, jobs and timeout each module takes and describes itself.
SIDE_RESTORE_ARGS = dict(
    keep_as=dict(type="str", required=True),
    owner=dict(type="str"),
    client_bin=dict(type="path"),
    smoke_queries=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(name=dict(type="str", required=True), sql=dict(type="str", required=True)),
    ),
    namespace=dict(type="str", required=True),
    writers=dict(type="list", elements="dict", default=[], options=WORKLOAD_OPTIONS),
    incident=dict(type="str", required=True),
)
