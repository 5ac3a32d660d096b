"""Benchmark: ``ctops-agent scan --json`` over 10,000 files, against the floor.

Builds a tree of files in a temporary directory (60 % single PEM, 10 % PEM
bundles, 5 % DER, 3 % PKCS#7, 1 % PKCS#12, 1 % JKS, 20 % files that hold no
certificate), then times

* the real CLI, ``python -m agent.cli scan --json DIR`` in a subprocess
  (interpreter start-up included, bytecode cached as after an install),
  stdout to a file;
* the floor: a bare ``os.walk`` and read of every file, timed twice: in this
  process (no start-up at all) and as a fresh ``python -c`` subprocess (which
  pays the interpreter's start-up like the agent does).

Target: at least 3,000 files/s and at most 3x the floor's time. The verdict
compares like with like: the agent runs as a fresh process, so its floor is
the walk + read as a fresh process too. The in-process ratio (which also
charges the agent its interpreter start-up and JSON output) is printed beside
it.

    .venv/bin/python bench/scan.py [--files 10000] [--pool 200] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402

from tests.agent.keystores import PrivateKey, Trusted  # noqa: E402
from tests.agent.keystores import keystore as write_keystore  # noqa: E402
from tests.certs import make_ca, make_cert, pkcs7_bundle  # noqa: E402

MIX = (  # (share, kind)
    (0.60, "pem"),
    (0.10, "bundle"),
    (0.05, "der"),
    (0.03, "p7b"),
    (0.01, "p12"),
    (0.01, "jks"),
    (0.20, "other"),
)
PASSWORD = "bench-password"
TARGET_FILES_PER_SECOND = 3000
TARGET_RATIO = 3.0


def openssl_pkcs12(leaf, *chain) -> bytes:
    """A PKCS#12 as ``openssl pkcs12 -export`` (OpenSSL 3) writes it: PBES2 AES-256-CBC,
    2048 iterations, SHA-256 MAC. (cryptography's BestAvailableEncryption uses
    20,000 iterations: about 5 ms to open each distinct file instead of 0.5 ms.)"""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(PASSWORD.encode())
    )
    return pkcs12.serialize_key_and_certificates(b"bench", leaf.key, leaf.cert, [c.cert for c in chain], encryption)


def build_tree(directory: Path, files: int, pool_size: int, seed: int = 1) -> dict[str, int]:
    rng = random.Random(seed)
    root = make_ca("Bench Root CA")
    intermediate = make_ca("Bench Intermediate CA", issuer=root)
    now = dt.datetime.now(dt.timezone.utc)
    yesterday = now - dt.timedelta(days=1)
    pool = [
        make_cert(f"h{n}.bench.test", sans=(f"h{n}.bench.test",), issuer=intermediate, not_before=yesterday, days=rng.randint(1, 400))
        for n in range(pool_size)
    ]
    # Containers come from a smaller pool (copies of one file are common on real hosts too).
    p12_pool = [openssl_pkcs12(leaf, intermediate) for leaf in pool[:10]]
    jks_pool = [
        write_keystore([PrivateKey("server", [leaf, intermediate]), Trusted("root", root.der)], PASSWORD)
        for leaf in pool[:10]
    ]
    p7b_pool = [pkcs7_bundle(leaf, intermediate, root, pem=n % 2 == 0) for n, leaf in enumerate(pool[:20])]
    key_pem = pool[0].key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    others = [
        b"# nginx snippet\nssl_protocols TLSv1.2 TLSv1.3;\n" * 20,
        key_pem,
        bytes(rng.randrange(256) for _ in range(3000)),
        b"\x7fELF" + bytes(4000),
        b"README\n" * 100,
    ]

    kinds: list[str] = []
    for share, kind in MIX:
        kinds += [kind] * round(share * files)
    kinds = (kinds + ["other"] * files)[:files]
    rng.shuffle(kinds)
    counts: dict[str, int] = {}
    for number, kind in enumerate(kinds):
        sub = directory / f"d{number // 100:03}" / f"e{number % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        leaf = pool[number % pool_size]
        if kind == "pem":
            data = leaf.pem_bytes
        elif kind == "bundle":
            data = leaf.pem_bytes + intermediate.pem_bytes + (root.pem_bytes if number % 2 else b"")
        elif kind == "der":
            data = leaf.der
        elif kind == "p7b":
            data = p7b_pool[number % len(p7b_pool)]
        elif kind == "p12":
            data = p12_pool[number % len(p12_pool)]
        elif kind == "jks":
            data = jks_pool[number % len(jks_pool)]
        else:
            data = others[number % len(others)]
        (sub / f"f{number:05}.{kind}").write_bytes(data)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def floor(directory: Path) -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()
            count += 1
    return time.perf_counter() - start, count


FLOOR_SCRIPT = """
import os, sys
for folder, _, names in os.walk(sys.argv[1]):
    for name in names:
        with open(os.path.join(folder, name), "rb") as handle:
            handle.read()
"""


def floor_subprocess(directory: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR_SCRIPT, str(directory)], check=True)
    return time.perf_counter() - start


def agent_environment(workdir: Path) -> dict[str, str]:
    """Bytecode cached (outside the tree), as after ``pip install .``, even where
    PYTHONDONTWRITEBYTECODE is set: compiling the sources at every start is not
    what a host does."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def agent_scan(directory: Path, config_file: Path, output: Path, env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "agent.cli", "scan", "--json", "--config", str(config_file), str(directory)]
    start = time.perf_counter()
    with output.open("wb") as sink:
        subprocess.run(command, cwd=ROOT, stdout=sink, check=True, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=200, help="distinct leaf certificates")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each; the best is kept")
    parser.add_argument("--keep", metavar="DIR", help="build the tree here and keep it")
    args = parser.parse_args()

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ctops-bench-scan-"))
    tree = workdir / "tree"
    try:
        started = time.perf_counter()
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        counts = build_tree(tree, args.files, args.pool)
        print(f"built {args.files} files in {time.perf_counter() - started:.1f} s: {counts}")
        config_file = workdir / "agent.toml"
        config_file.write_text(f'hostname = "bench.test"\nkeystore_passwords = ["{PASSWORD}"]\n')
        output = workdir / "scan.json"

        env = agent_environment(workdir)
        floor(tree)  # warm the page cache
        agent_scan(tree, config_file, output, env)  # and the bytecode cache
        floor_times, process_floor_times, scan_times = [], [], []
        for _ in range(args.runs):
            seconds, counted = floor(tree)
            floor_times.append(seconds)
            process_floor_times.append(floor_subprocess(tree))
            scan_times.append(agent_scan(tree, config_file, output, env))
        assert counted == args.files
        document = json.loads(output.read_text())
        floor_best, process_floor_best, scan_best = min(floor_times), min(process_floor_times), min(scan_times)
        scan_rate = args.files / scan_best
        ratio = scan_best / process_floor_best
        items, errors = len(document["items"]), len(document["errors"])
        print(f"report: {items} certificates, {errors} errors, complete={document['complete']}")
        print(f"floor, in process (os.walk + read): {floor_best:6.3f} s  {args.files / floor_best:9.0f} files/s")
        print(f"floor, python -c subprocess:        {process_floor_best:6.3f} s  {args.files / process_floor_best:9.0f} files/s")
        print(f"ctops-agent scan --json:            {scan_best:6.3f} s  {scan_rate:9.0f} files/s")
        print(f"ratio agent / in-process floor:     {scan_best / floor_best:6.2f}x")
        print(f"ratio agent / subprocess floor:     {ratio:6.2f}x")
        ok = scan_rate >= TARGET_FILES_PER_SECOND and ratio <= TARGET_RATIO
        print(f"target (>= {TARGET_FILES_PER_SECOND} files/s, <= {TARGET_RATIO:.0f}x the subprocess floor): "
              f"{'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
