"""CT-Ops Certificates server.

Importing this package pulls in nothing beyond the standard library, so the agent
(which ships without the server extra) can use ``backend.x509``.
"""

__version__ = "0.1.0"
