"""The CT-Ops agent: finds the certificates on a host and reports them.

Installed by a plain ``pip install .``; it depends on ``cryptography`` and the
standard library only (plus :mod:`backend.x509`, the product's one certificate
parser, which imports nothing else).
"""

__version__ = "0.1.0"
