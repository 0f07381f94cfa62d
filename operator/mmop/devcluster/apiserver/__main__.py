"""``python -m mmop.devcluster.apiserver``: run the API server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from mmop.devcluster.apiserver.server import ApiServer, write_kubeconfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmop.devcluster.apiserver", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument(
        "--watch-history",
        type=int,
        default=10_000,
        help="events kept per resource type for resuming watches",
    )
    parser.add_argument("--bookmark-interval", type=float, default=10.0)
    parser.add_argument("--log-level", default="INFO")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = ApiServer(
        args.host,
        args.port,
        watch_history=args.watch_history,
        bookmark_interval=args.bookmark_interval,
    )
    async with server:
        if args.kubeconfig:
            write_kubeconfig(
                args.kubeconfig,
                server.url,
                args.namespace,
                token=server.token,
                ca_pem=server.ca_pem,
            )
            print(f"mmop devcluster API server: {server.url}", flush=True)
        else:
            # Without a kubeconfig the token and the CA are only here; the terminal is its user's.
            print(f"mmop devcluster API server: {server.url} token {server.token}", flush=True)
            print(server.ca_pem, end="", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
