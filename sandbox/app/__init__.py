"""The sandbox application: one code base standing in for the order-book platform's services.

``python -m sandbox.app migrate status|rollback|up`` runs the schema migrations (``migrate.py``);
``python -m sandbox.app serve --role api|indexer|crank --listen HOST:PORT --image IMAGE`` runs one
service as a pod's container does (``server.py``: HTTP, health and metrics; ``api.py``: the api
role's endpoints; ``workers.py``: the indexer's and the crank's background loops; ``backends.py``:
the database and Redis connections). docs/sandbox.md describes what each role does.
"""
