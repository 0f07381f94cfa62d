"""``mmop``: the operator's command line (crd, render, run, dev, rollout, get); also the kubectl
plugin ``kubectl-mmop``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmop.operator import crd, ctl, documents, models
from mmop.operator.builders.children import build_children
from mmop.operator.settings import BuildOptions


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


def render(
    doc: dict[str, Any],
    *,
    options: BuildOptions,
    canary_version: str | None = None,
    weight: int = 0,
) -> list[dict[str, Any]]:
    """The desired children of one MultimodalModel document (status is ignored)."""
    body = {k: v for k, v in doc.items() if k != "status"}
    mm = models.parse_model(body)
    if canary_version is not None:
        if canary_version == mm.spec.version:
            raise CliError("--canary-version must differ from spec.version (the stable version)")
        serving = mm.spec.serving()
        mm.status = models.MultimodalModelStatus(
            stable_version=mm.spec.version,
            stable_revision=serving.revision(),
            stable_spec=serving,
            canary_version=canary_version,
            canary_revision=serving.model_copy(update={"version": canary_version}).revision(),
            canary_weight=weight,
        )
    return build_children(mm, options=options)


def _cmd_crd(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.check:
        stale = crd.stale_crds(root)
        if stale:
            names = ", ".join(str(p) for p in stale)
            print(f"stale CRD files (run `mmop crd`): {names}", file=sys.stderr)
            return 1
        return 0
    if args.stdout:
        sys.stdout.write(crd.render_crd_yaml())
        return 0
    for path in crd.write_crds(root):
        print(f"wrote {path}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    if args.weight is not None and args.canary_version is None:
        raise CliError("--weight needs --canary-version")
    options = BuildOptions(cluster_domain=args.cluster_domain)
    objects: list[dict[str, Any]] = []
    for doc in documents.load_documents(args.filename):
        if doc.get("kind") != models.KIND:
            raise CliError(f"{args.filename}: expected kind {models.KIND}, found {doc.get('kind')}")
        name = (doc.get("metadata") or {}).get("name", "?")
        try:
            objects += render(
                doc, options=options, canary_version=args.canary_version, weight=args.weight or 0
            )
        except models.InvalidSpecError as error:
            raise CliError(f"{args.filename}: MultimodalModel {name} is invalid: {error}") from None
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": objects}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mmop.operator.runner import run  # imports kopf

    return run(namespace=args.namespace, kubeconfig=args.kubeconfig, standalone=args.standalone)


def _cmd_dev(args: argparse.Namespace) -> int:
    from mmop.devcluster.cli import run

    return run(args)


def build_parser(prog: str = "mmop") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_crd = sub.add_parser("crd", help="generate the CRD YAML from the models")
    p_crd.add_argument("--root", default=".", help="project root (default: .)")
    p_crd.add_argument("--check", action="store_true", help="fail if the committed YAML is stale")
    p_crd.add_argument("--stdout", action="store_true", help="print instead of writing files")
    p_crd.set_defaults(func=_cmd_crd)

    p_render = sub.add_parser("render", help="print the objects a MultimodalModel makes")
    p_render.add_argument("-f", "--filename", required=True, help="YAML file ('-' for stdin)")
    p_render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p_render.add_argument("--canary-version", help="also render a canary of this version")
    p_render.add_argument("--weight", type=_percent, help="the canary's weight (0-100)")
    p_render.add_argument("--cluster-domain", default="cluster.local")
    p_render.set_defaults(func=_cmd_render)

    p_run = sub.add_parser("run", help="run the operator (kopf) against a cluster")
    p_run.add_argument("--namespace", "-n", help="watch one namespace (default: all)")
    p_run.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster or ~/.kube)")
    p_run.add_argument(
        "--standalone", action="store_true", default=True, help="no peering (one operator replica)"
    )
    p_run.set_defaults(func=_cmd_run)

    p_dev = sub.add_parser("dev", help="run a local control plane with the operator")
    p_dev.set_defaults(func=_cmd_dev)
    from mmop.devcluster.cli import add_arguments

    add_arguments(p_dev)
    ctl.add_commands(sub)
    return parser


def _percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value


def main(argv: Sequence[str] | None = None, *, prog: str = "mmop") -> None:
    args = build_parser(prog).parse_args(argv)
    try:
        code = args.func(args)
    except (CliError, documents.DocumentError, ctl.CtlError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)


def kubectl_plugin_main() -> None:
    """``kubectl-mmop``: kubectl runs it for ``kubectl mmop ...`` with the rest of the line."""
    main(prog="kubectl mmop")


if __name__ == "__main__":
    main()
