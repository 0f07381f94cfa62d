"""``mmop dev``: run the local control plane (API server, kubelet, router) and the operator,
apply manifests, print what changes, and stop everything on Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Final

from mmop.devcluster import demo, manifests
from mmop.devcluster import prometheus as prom
from mmop.devcluster.cluster import DevCluster
from mmop.devcluster.progress import follow_models
from mmop.operator import kube

DEFAULT_STATE_DIR: Final = ".mmop-dev"
DEFAULT_ROUTER_PORT: Final = 8000
OPERATOR_WATCH_SECONDS: Final = 1.0
PROMETHEUS_URL_ENV: Final = "MMOP_OPERATOR_PROMETHEUS_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="FILE",
        help="apply the YAML documents in FILE once the cluster runs (repeatable)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="build a tiny random-weight CLIP model and deploy it as MultimodalModel clip-demo",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="API server port (default: a free port; see the kubeconfig)",
    )
    parser.add_argument(
        "--router-port",
        type=int,
        default=DEFAULT_ROUTER_PORT,
        help=f"router port (default {DEFAULT_ROUTER_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--gpus", type=int, default=0, help="nvidia.com/gpu the local node offers (default 0)"
    )
    parser.add_argument(
        "--no-operator",
        action="store_true",
        help="do not run the operator (run your own: mmop run --kubeconfig ...)",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help=(
            "run a real Prometheus (the `prometheus` binary) that scrapes the pods with the "
            "chart's PodMonitor, and base the operator's canary analysis on it"
        ),
    )
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=0,
        help="Prometheus' port with --prometheus (default: a free port)",
    )
    parser.add_argument(
        "--scrape-interval",
        default=prom.DEFAULT_SCRAPE_INTERVAL,
        help=(
            f"Prometheus' scrape interval with --prometheus "
            f"(default {prom.DEFAULT_SCRAPE_INTERVAL})"
        ),
    )
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"kubeconfig, logs, models and volumes (default ./{DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the control plane's own messages (default WARNING)",
    )


def _say(text: str = "") -> None:
    print(text, flush=True)


def _usage(cluster: DevCluster, *, operator: bool, demo_request: Path | None) -> None:
    kubeconfig = shlex.quote(str(cluster.kubeconfig))
    _say("mmop dev: the local control plane is up")
    _say(f"  API server  {cluster.api_url}")
    _say(f"  router      {cluster.router_url}")
    _say(f"  kubeconfig  {cluster.kubeconfig}")
    _say(f"  logs        {cluster.logs_dir}/  (pods: NAMESPACE/POD.log, operator.log)")
    if cluster.prometheus_url is not None:
        _say(f"  prometheus  {cluster.prometheus_url}  (canary analysis reads it)")
    if operator and cluster.operator is not None:
        _say(f"  operator    pid {cluster.operator.pid}")
    else:
        env = (
            f"{PROMETHEUS_URL_ENV}={cluster.prometheus_url} "
            if cluster.prometheus_url is not None
            else ""
        )
        _say(f"  operator    not started: {env}mmop run --kubeconfig {kubeconfig}")
    _say()
    _say(f"  export KUBECONFIG={kubeconfig}")
    _say("  kubectl get mmmodels")
    if demo_request is not None:
        _say(
            f"  {demo.curl_command(cluster.router_url, demo_request, namespace=cluster.namespace)}"
        )
    else:
        _say(f"  curl -s {cluster.router_url}/v2/models/NAME/ready -H 'Host: NAME.NAMESPACE'")
    _say()
    _say("Ctrl-C stops everything.")


async def _watch(cluster: DevCluster) -> None:
    """Print model changes and operator exits until SIGINT / SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with kube.KubeClient(cluster.api_connection) as client:
        follower = asyncio.create_task(follow_models(client, _say))
        reported = False
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), OPERATOR_WATCH_SECONDS)
                process = cluster.operator
                if process is not None and process.poll() is not None and not reported:
                    reported = True
                    _say(
                        f"mmop dev: the operator exited with status {process.returncode}; "
                        f"see {cluster.operator_log}"
                    )
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state_dir = Path(args.state_dir).resolve()
    documents: list[dict[str, Any]] = []
    for filename in args.filename:
        documents += manifests.load_documents(filename)
    demo_request = None
    if args.demo:
        if not (state_dir / "models" / "clip-tiny" / "config.json").exists():
            _say("mmop dev: building the demo model (once) ...")
        documents.append(demo.manifest(demo.ensure_model(state_dir)))
        demo_request = demo.write_request(state_dir)
    if args.prometheus:
        try:
            prom.duration_seconds(args.scrape_interval)
        except ValueError as error:
            _say(f"mmop dev: --scrape-interval: {error}")
            return 2
        if prom.find_binary() is None:
            _say(f"mmop dev: --prometheus: prometheus not found: {prom.INSTALL_HINT}")
            return 1
    cluster = DevCluster(
        state_dir, api_port=args.port, router_port=args.router_port, gpus=args.gpus
    )
    try:
        cluster.start()
    except (RuntimeError, OSError) as error:
        _say(f"mmop dev: {error}")
        cluster.stop()
        return 1
    try:
        operator_env: dict[str, str] = {}
        if args.prometheus:
            try:
                url = cluster.start_prometheus(
                    scrape_interval=args.scrape_interval, port=args.prometheus_port
                )
            except (RuntimeError, OSError) as error:
                _say(f"mmop dev: {error}")
                return 1
            operator_env[PROMETHEUS_URL_ENV] = url
        if not args.no_operator:
            cluster.start_operator(env=operator_env)
        try:
            for obj in cluster.apply(documents):
                meta = obj.get("metadata") or {}
                where = f"{meta['namespace']}/" if meta.get("namespace") else ""
                _say(f"applied {obj.get('kind')} {where}{meta.get('name')}")
        except manifests.ApplyError as error:
            _say(f"mmop dev: {error}")
            return 1
        _usage(cluster, operator=not args.no_operator, demo_request=demo_request)
        asyncio.run(_watch(cluster))
    except KeyboardInterrupt:
        pass
    finally:
        _say("mmop dev: stopping ...")
        cluster.stop()
        _say("mmop dev: stopped")
    return 0
