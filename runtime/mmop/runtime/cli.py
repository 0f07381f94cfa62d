"""``mmop-runtime``: parse the command line over the environment into settings, then serve.

Options are generated from ``RuntimeSettings`` (``--max-batch-size`` for ``max_batch_size``);
an option given on the command line wins over its ``MMOP_*`` environment variable.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import sys
import types
import typing
from typing import Any

import pydantic

from mmop.runtime.logs import configure_logging
from mmop.runtime.settings import RuntimeSettings, cli_fields, env_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmop-runtime",
        description="Serve one transformers model over the Open Inference Protocol v2 (and "
        "OpenAI embeddings) with dynamic batching. Every option also reads from its MMOP_* "
        "environment variable.",
        argument_default=argparse.SUPPRESS,
    )
    for name, info in cli_fields().items():
        flag = "--" + name.replace("_", "-")
        env = env_name(name)
        help_text = f"{info.description or name} [env {env}]"
        annotation = info.annotation
        choices = _choices(annotation)
        if _base_type(annotation) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif choices:
            parser.add_argument(flag, choices=choices, help=help_text)
        else:
            parser.add_argument(flag, metavar=name.upper(), help=help_text)
    return parser


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _choices(annotation: Any) -> list[str] | None:
    base = _base_type(annotation)
    if typing.get_origin(base) is typing.Literal:
        return [str(value) for value in typing.get_args(base)]
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return [str(member.value) for member in base]
    return None


def load_settings(argv: list[str] | None = None) -> RuntimeSettings:
    """Settings from ``argv`` over the environment; exits with status 2 on bad values."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    try:
        return RuntimeSettings(**given)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        parser.exit(2, f"mmop-runtime: invalid settings: {problems}\n")


def _problem(error: Any) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    if field in RuntimeSettings.model_fields:
        field = f"--{field.replace('_', '-')} / {env_name(field)}"
    return f"{field}: {error.get('msg', 'invalid')}"


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    configure_logging(settings.log_level)
    from mmop.runtime.server import serve  # imported after logging is set up

    code = serve(settings)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Interpreter finalization with torch loaded takes about a second and does nothing that a
    # stopped server needs; a drained pod should be gone as soon as it is done.
    os._exit(code)


if __name__ == "__main__":
    main()
