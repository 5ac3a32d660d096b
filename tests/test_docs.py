"""Docs that must not drift from the code."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented():
    names: set[str] = set()
    for path in [*(ROOT / "backend").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        if path.name == "test_docs.py":
            continue
        names |= set(re.findall(r"""["'](CTOPS_[A-Z0-9_]+|DATABASE_URL|REDIS_URL)["']""", path.read_text()))
    documented = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in documented)
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    assert len(names) > 10
