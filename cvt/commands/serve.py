"""``cvt serve REPO``: the repository, read-only, over HTTP (loopback unless told otherwise)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import stat
import sys
from pathlib import Path

HELP = "serve a repository read-only over HTTP (Range requests, listing, new-exposure events)"


def add_arguments(parser) -> None:
    parser.add_argument("repo", help="repository folder of <OBSID>.zarr exposures")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)",
    )
    parser.add_argument(
        "--port", type=int, default=8470, help="port (default 8470; 0 picks a free one)"
    )
    parser.add_argument(
        "--token-file",
        help="file holding a secret token: clients must send 'Authorization: Bearer <token>'",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    # test and bench only: slow or failing responses on purpose
    parser.add_argument("--inject-latency-ms", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--inject-faults", default=None, help=argparse.SUPPRESS)


def _read_token(path: str) -> str:
    p = Path(path)
    token = p.read_text().strip()
    if not token:
        raise SystemExit(f"cvt serve: {p}: the token file is empty")
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"cvt serve: warning: {p} can be read by other users (chmod 600 it)", file=sys.stderr)
    return token


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    from cvt.server import Faults, make_app, serve_forever

    repo = Path(args.repo)
    if not repo.is_dir():
        print(f"cvt serve: {repo}: no such folder", file=sys.stderr)
        return 2
    token = _read_token(args.token_file) if args.token_file else None
    latency = args.inject_latency_ms
    if latency is None:
        latency = float(os.environ.get("CVT_SERVE_LATENCY_MS") or 0)
    spec = args.inject_faults or os.environ.get("CVT_SERVE_FAULTS")
    faults = Faults.parse(latency, spec)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    app = make_app(repo, token=token, faults=faults)
    if faults.active:
        print(
            f"cvt serve: TEST MODE: {latency:g} ms added to every response, faults {faults.rates}",
            file=sys.stderr,
        )
    if not _is_loopback(args.host) and token is None:
        print(
            f"cvt serve: warning: serving {args.host} to the network without a token "
            "(--token-file)",
            file=sys.stderr,
        )

    def announce(url: str) -> None:
        print(
            f"cvt serve: {url} (repository {repo.resolve()}, read-only"
            f"{', token required' if token else ''}; Ctrl-C to stop)",
            flush=True,
        )

    serve_forever(app, args.host, args.port, announce=announce)
    print("cvt serve: stopped", flush=True)
    return 0
