"""schema.graphql at the root is always the exported schema."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_is_fresh():
    exported = subprocess.run(
        [sys.executable, "-m", "backend.cli", "export-schema"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    committed = (ROOT / "schema.graphql").read_text()
    assert exported == committed, "schema.graphql is stale: run `make schema` and commit it"
