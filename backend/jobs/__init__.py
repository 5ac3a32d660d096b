"""Periodic work: the arq ``WorkerSettings`` (production) and the embedded runner
(one process, no Redis). Both are thin wrappers over ``backend.services``."""
