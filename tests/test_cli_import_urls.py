"""`ctops import-urls` as a real process against TLS servers on loopback."""

from __future__ import annotations

import pytest

from tests.support.checker import make_pki
from tests.support.processes import ctops, ctops_env, free_port
from tests.support.tls_servers import TLSServer


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_import_urls(tmp_path, pki):
    env = ctops_env(
        CTOPS_DATA_DIR=str(tmp_path / "data"), CTOPS_OUTBOUND_ALLOW="127.0.0.0/8", CTOPS_TLS_TIMEOUT_SECONDS="1",
        CTOPS_CA_BUNDLE=str(pki.ca_file),
    )  # fmt: skip
    names = ["a.test", "b.test", "c.test"]
    with TLSServer(pki.chain("a.test"), by_name={n: pki.chain(n) for n in names}) as server:
        listing = tmp_path / "urls.txt"
        refused = free_port()
        listing.write_text(
            "# our endpoints\n\n"
            f"https://127.0.0.1:{server.port} a.test\n"
            f"127.0.0.1:{server.port}   b.test   # the API\n"
            f"https://127.0.0.1:{server.port}/other c.test\n"
            f"https://127.0.0.1:{server.port} A.TEST\n"
            f"https://127.0.0.1:{refused}\n"
            "gopher://old.test\n"
            "too many fields here\n"
        )
        result = ctops("import-urls", str(listing), "--interval", "MINUTES_15", "--concurrency", "3", env=env, check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "tracked: 3, already tracked: 1, failed: 3" in result.stdout
        assert f"line 7: https://127.0.0.1:{refused}: CONNECTION_REFUSED" in result.stdout
        assert "line 8: gopher://old.test: INVALID_URL" in result.stdout
        assert "line 9: too: INVALID_URL: expected `URL [serverName]`" in result.stdout
        assert "7/7 URLs" in result.stderr  # progress (stderr is not a terminal here)

        good = tmp_path / "good.txt"
        good.write_text(f"https://127.0.0.1:{server.port} c.test\n")
        again = ctops("import-urls", str(good), env=env)
        assert "tracked: 0, already tracked: 1, failed: 0" in again.stdout
