"""The GraphQL layer: strawberry types and thin resolvers over ``backend.services``.

One module per domain (certificates, hosts, events, tokens, ...); shared pieces
in ``core/``; the root schema in ``api.py``.
"""
