"""`mmop rollout promote|abort|pause|resume|retry NAME` and `mmop get NAME [--watch]`: drive and
watch a rollout from the command line (also as the kubectl plugin `kubectl mmop`).

Pause and resume set ``spec.rollout.paused``; promote, abort and retry write a request the
operator consumes exactly once (see :mod:`mmop.operator.rollout.commands`) and acknowledges in
``status.lastCommand``, which these commands wait for and print.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from mmop.operator import kube, models, naming
from mmop.operator.rollout import commands
from mmop.operator.tree import render_tree

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
POLL_SECONDS = 0.25
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class CtlError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


@dataclass(frozen=True)
class Target:
    connection: kube.Connection
    namespace: str
    name: str


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the MultimodalModel")
    parser.add_argument(
        "-n", "--namespace", help="its namespace (default: the kubeconfig context's, or default)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        from kubernetes import config as kconfig

        contexts, current = kconfig.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except Exception:
        if IN_CLUSTER_NAMESPACE.exists():
            return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace or "default")


def resolve_target(args: argparse.Namespace) -> Target:
    kubeconfig = args.kubeconfig or None
    try:
        if args.context:
            connection = kube.Connection.from_kubeconfig(kubeconfig, context=args.context)
        else:
            connection = kube.Connection.auto(kubeconfig)
    except Exception as error:
        raise CtlError(f"cannot load the cluster connection: {error}") from None
    namespace = args.namespace or _default_namespace(kubeconfig, args.context)
    return Target(connection=connection, namespace=namespace, name=args.name)


async def _get_model(client: kube.KubeClient, target: Target) -> dict[str, Any]:
    body = await client.get_or_none(
        kube.MULTIMODAL_MODEL, name=target.name, namespace=target.namespace
    )
    if body is None:
        raise CtlError(f'multimodalmodel "{target.name}" not found in namespace {target.namespace}')
    return body


# --- rollout commands --------------------------------------------------------------------------
async def set_paused(target: Target, *, paused: bool, out: TextIO) -> int:
    async with kube.KubeClient(target.connection, field_manager="mmop-cli") as client:
        await _get_model(client, target)
        await client.patch(
            kube.MULTIMODAL_MODEL,
            name=target.name,
            namespace=target.namespace,
            patch={"spec": {"rollout": {"paused": paused}}},
        )
    word = "paused" if paused else "resumed"
    note = (
        "the canary's weight holds until `rollout resume`"
        if paused
        else "the rollout continues from its current step"
    )
    print(f"multimodalmodel.mmop.io/{target.name} {word}: {note}", file=out)
    return 0


async def request_command(
    target: Target, *, command: commands.Command, wait_seconds: float, out: TextIO
) -> int:
    """Write the request, then wait for the operator's acknowledgement and print it."""
    nonce = commands.new_nonce()
    async with kube.KubeClient(target.connection, field_manager="mmop-cli") as client:
        await _get_model(client, target)
        await client.patch(
            kube.MULTIMODAL_MODEL,
            name=target.name,
            namespace=target.namespace,
            patch={
                "metadata": {
                    "annotations": {commands.ANNOTATION: commands.format_request(command, nonce)}
                }
            },
        )
        if wait_seconds <= 0:
            print(
                f"multimodalmodel.mmop.io/{target.name} {command.value} requested (id {nonce})",
                file=out,
            )
            return 0
        deadline = time.monotonic() + wait_seconds
        while True:
            body = await _get_model(client, target)
            last = (body.get("status") or {}).get("lastCommand") or {}
            if last.get("id") == nonce:
                break
            if time.monotonic() >= deadline:
                raise CtlError(
                    f"{command.value} requested (id {nonce}), but the operator has not "
                    f"acknowledged it within {wait_seconds:g}s; it stays pending and applies "
                    f"when the operator next reconciles {target.name}"
                )
            await asyncio.sleep(POLL_SECONDS)
    if last.get("result") != models.CommandResult.ACCEPTED.value:
        raise CtlError(f"{command.value} refused: {last.get('message', '')}")
    print(f"multimodalmodel.mmop.io/{target.name} {command.value}: {last.get('message')}", file=out)
    spec = body.get("spec") or {}
    if command == commands.Command.PROMOTE and (spec.get("rollout") or {}).get("paused"):
        print(
            "note: spec.rollout.paused is still true: the next rollout holds after its "
            "verification until `rollout resume`",
            file=out,
        )
    return 0


# --- get -----------------------------------------------------------------------------------------
async def _view(client: kube.KubeClient, target: Target, body: dict[str, Any]) -> str:
    selector = naming.selector_string(naming.pod_selector(target.name))
    deployments = await client.list_items(
        kube.DEPLOYMENT, namespace=target.namespace, label_selector=selector
    )
    pods = await client.list_items(kube.POD, namespace=target.namespace, label_selector=selector)
    return render_tree(body, deployments=deployments, pods=pods, now=datetime.now(UTC))


async def get(target: Target, *, watch: bool, out: TextIO) -> int:
    async with kube.KubeClient(target.connection, field_manager="mmop-cli") as client:
        body = await _get_model(client, target)
        clear = watch and out.isatty()
        out.write(await _view(client, target, body))
        out.flush()
        if not watch:
            return 0
        resource_version = body["metadata"].get("resourceVersion")
        while True:
            try:
                async for event in client.watch(
                    kube.MULTIMODAL_MODEL,
                    namespace=target.namespace,
                    resource_version=resource_version,
                ):
                    obj = event.get("object") or {}
                    resource_version = (obj.get("metadata") or {}).get(
                        "resourceVersion", resource_version
                    )
                    if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    if obj["metadata"].get("name") != target.name:
                        continue
                    if event["type"] == "DELETED":
                        out.write(f"multimodalmodel {target.name} deleted\n")
                        out.flush()
                        return 0
                    view = await _view(client, target, obj)
                    out.write(CLEAR_SCREEN if clear else "\n")
                    out.write(view)
                    out.flush()
            except kube.GoneError:
                resource_version = (await _get_model(client, target))["metadata"].get(
                    "resourceVersion"
                )


# --- argparse wiring ---------------------------------------------------------------------
def add_commands(sub: Any) -> None:
    """`rollout ...` and `get` subcommands of the `mmop` (and `kubectl mmop`) parser."""
    p_rollout = sub.add_parser("rollout", help="drive a MultimodalModel's rollout")
    verbs = p_rollout.add_subparsers(dest="verb", required=True)
    helps = {
        "promote": "promote a verified canary now, skipping the remaining steps",
        "abort": "roll the canary back now (weight 0, canary removed, phase Failed)",
        "retry": "roll out a rolled-back revision again without a spec change",
        "pause": "hold the canary's weight (sets spec.rollout.paused)",
        "resume": "continue a paused rollout (clears spec.rollout.paused)",
    }
    for verb, text in helps.items():
        p = verbs.add_parser(verb, help=text, description=text)
        add_target_arguments(p)
        if verb in ("promote", "abort", "retry"):
            p.add_argument(
                "--wait",
                type=float,
                default=30.0,
                metavar="SECONDS",
                help="wait this long for the operator's answer (0: do not wait; default 30)",
            )
        p.set_defaults(func=_cmd_rollout)

    p_get = sub.add_parser("get", help="show a MultimodalModel's versions, weights and history")
    add_target_arguments(p_get)
    p_get.add_argument("-w", "--watch", action="store_true", help="redraw on every change")
    p_get.set_defaults(func=_cmd_get)


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except kube.ApiError as error:
        raise CtlError(str(error)) from None
    except (OSError, httpx.HTTPError) as error:  # connection refused and friends
        raise CtlError(f"cannot reach the API server: {error}") from None


def _cmd_rollout(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    if args.verb in ("pause", "resume"):
        return _run(set_paused(target, paused=args.verb == "pause", out=sys.stdout))
    return _run(
        request_command(
            target, command=commands.Command(args.verb), wait_seconds=args.wait, out=sys.stdout
        )
    )


def _cmd_get(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    try:
        return _run(get(target, watch=args.watch, out=sys.stdout))
    except KeyboardInterrupt:
        return 0
