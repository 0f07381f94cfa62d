"""The naive baseline: a FastAPI endpoint that runs the model for each request by itself.

    BENCH_MODEL=DIR python -m bench.runtime.naive_server --port P [--sync]

The pattern of most tutorials: a pydantic body, decode, preprocess and one forward pass per
request, no batching. ``async def`` (default) runs everything on the event loop, one request at
a time; ``--sync`` makes it a plain ``def`` endpoint, which FastAPI runs in its thread pool, so
many forward passes run at once and share the cores.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.runtime.pipeline import pipeline_from_env


class ImageRequest(BaseModel):
    image: str  # base64 PNG


def create_app(*, sync: bool) -> FastAPI:
    pipeline = pipeline_from_env()
    app = FastAPI()

    def embed(request: ImageRequest) -> dict[str, Any]:
        rows = pipeline.forward([pipeline.decode_base64(request.image)])
        return {"embedding": rows[0].tolist()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if sync:

        @app.post("/predict")
        def predict_sync(request: ImageRequest) -> dict[str, Any]:
            return embed(request)

    else:

        @app.post("/predict")
        async def predict(request: ImageRequest) -> dict[str, Any]:
            return embed(request)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sync", action="store_true", help="a def endpoint (thread pool)")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(sync=args.sync), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
