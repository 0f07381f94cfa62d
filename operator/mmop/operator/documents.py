"""Read YAML manifests: the one document loader of both command lines (``mmop render`` and
``mmop dev -f``) and of :meth:`mmop.devcluster.cluster.DevCluster.apply_file`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


class DocumentError(Exception):
    """A file that cannot be read or is not a list of YAML mappings (message names the file)."""


def load_documents(path: str) -> list[dict[str, Any]]:
    """YAML documents from a file ('-' is stdin), skipping empty ones."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise DocumentError(f"{path}: {error.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise DocumentError(f"{path}: not valid YAML: {error}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise DocumentError(
                f"{path}: every document must be a mapping, found {type(doc).__name__}"
            )
    return docs
