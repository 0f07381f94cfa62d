"""The peer: LitServe serving the same model with the same batch size and batch timeout.

    BENCH_MODEL=DIR python -m bench.runtime.litserve_server --port P --max-batch-size 32 \
        --batch-timeout-ms 5

A ``LitAPI`` whose ``decode_request`` does the same base64 + decode + preprocess work as the
runtime, ``batch`` stacks, ``predict`` runs the forward pass, ``unbatch`` splits the rows and
``encode_response`` returns a JSON list. One API server process and one inference worker (the
defaults for one device), so the worker's torch threads are the only torch threads.
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls  # type: ignore[import-untyped]

from bench.runtime.pipeline import ClipImagePipeline, pipeline_from_env


class ClipEmbeddingAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.pipeline: ClipImagePipeline = pipeline_from_env()

    # No annotation on ``request``: LitServe reads it as the request type, and without one it
    # parses the JSON body (its default path) and passes the dict.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.pipeline.decode_base64(request["image"])

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs  # the pipeline stacks them

    def predict(self, x: list[Any]) -> Any:
        return self.pipeline.forward(x)

    def unbatch(self, output: Any) -> list[Any]:
        return list(output)

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embedding": output.tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args(argv)
    api = ClipEmbeddingAPI(
        max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout_ms / 1000.0
    )
    server = ls.LitServer(
        api, accelerator=args.accelerator, devices=1, workers_per_device=1, timeout=120
    )
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
