"""The names and labels of everything the operator makes: label and annotation keys, selectors,
child object names, a model's in-cluster host. Shared by every layer (builders, rollout,
reconcile, handlers, the CLI) and by the dev cluster's tests; pure and free of I/O."""

from __future__ import annotations

from mmop.operator import models

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL = "mmop.io/model"
LABEL_VERSION = "mmop.io/version"
ANNOTATION_REVISION = "mmop.io/revision"
# On Deployment metadata only (never the pod template: changing it would restart pods): what
# the operator needs to rebuild its record of a version when the model's status is lost.
ANNOTATION_ROLE = "mmop.io/role"
ANNOTATION_SERVING_SPEC = "mmop.io/serving-spec"
# What else shapes the pod template and lives only in status: the hub commit the revision was
# pinned to (status.hubCommits) and the mirror target (status.stableMirror). Recovery reads
# them back, so a lost status never changes (restarts) a running version's pods.
ANNOTATION_HUB_COMMIT = "mmop.io/hub-commit"
ANNOTATION_MIRROR = "mmop.io/mirror"
ROLE_RETIRING = "retiring"
MANAGER = "mmop"


def model_labels(name: str) -> dict[str, str]:
    """Labels on every child of model ``name`` (also the selector of all its pods)."""
    return {LABEL_NAME: name, LABEL_MANAGED_BY: MANAGER, LABEL_MODEL: name}


def version_labels(name: str, version: str) -> dict[str, str]:
    return {**model_labels(name), LABEL_VERSION: version}


def pod_selector(name: str, version: str | None = None) -> dict[str, str]:
    """The labels that pick the pods of a model (and of one version of it)."""
    selector = {LABEL_MODEL: name}
    if version is not None:
        selector[LABEL_VERSION] = version
    return selector


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def versioned_name(name: str, version: str) -> str:
    """Deployment, Service, HPA and PDB of one version: NAME-VERSION."""
    return f"{name}-{version}"


def service_host(name: str, namespace: str, cluster_domain: str) -> str:
    return f"{name}.{namespace}.svc.{cluster_domain}"


def model_url(mm: models.MultimodalModel, cluster_domain: str) -> str:
    return f"http://{service_host(mm.metadata.name, mm.metadata.namespace, cluster_domain)}"


def version_name(spec_version: str, revision: str, *, taken: set[str]) -> str:
    """The version's name: spec.version, or spec.version-REV when that name is in use by
    another revision (the user changed the pod template without changing spec.version)."""
    if spec_version not in taken:
        return spec_version
    return f"{spec_version}-{revision[:6]}"
