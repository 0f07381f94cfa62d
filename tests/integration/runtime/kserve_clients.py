"""Run by ``test_runtime_kserve.py`` in a child process: the kserve SDK's REST and gRPC clients
against one runtime. A child, because kserve registers the ``inference.*`` protos in protobuf's
default pool and tritonclient (imported by the other tests) registers the same names from
another file: one process refuses the second.

Usage: ``python kserve_clients.py HTTP_URL GRPC_ADDRESS MODEL``; prints one JSON document.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from mmop.runtime import contract


def _request(model: str, *, binary: bool) -> InferRequest:
    if binary:
        image = InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([contract.tiny_png()], dtype=np.object_))
        text = InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"a photo", b"a dog"], dtype=np.object_))
    else:
        encoded = base64.b64encode(contract.tiny_png()).decode()
        image = InferInput("image", [1], "BYTES", data=[encoded])
        text = InferInput("text", [2], "BYTES", data=["a photo", "a dog"])
    return InferRequest(model_name=model, infer_inputs=[image, text], request_id="kserve-1")


def _outputs(response: Any) -> dict[str, Any]:
    return {
        "model_name": response.model_name,
        "id": response.id,
        "outputs": {
            output.name: {
                "shape": list(output.shape),
                "datatype": output.datatype,
                "data": np.asarray(output.as_numpy(), dtype=np.float64).tolist(),
            }
            for output in response.outputs
        },
    }


async def main(http_url: str, grpc_address: str, model: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    try:
        result["rest_live"] = await rest.is_server_live(http_url)
        result["rest_ready"] = await rest.is_server_ready(http_url)
        result["rest_model_ready"] = await rest.is_model_ready(http_url, model)
        result["rest_json"] = _outputs(
            await rest.infer(http_url, _request(model, binary=False), model_name=model)
        )
        result["rest_binary"] = _outputs(
            await rest.infer(http_url, _request(model, binary=True), model_name=model)
        )
        try:
            await rest.infer(http_url, _request(model, binary=False), model_name="no-such-model")
            result["rest_unknown_model"] = None
        except Exception as exc:
            response = getattr(exc, "response", None)
            result["rest_unknown_model"] = getattr(response, "status_code", repr(exc))
    finally:
        await rest.close()
    grpc_client = InferenceGRPCClient(grpc_address, retries=0, timeout=60)
    try:
        result["grpc_live"] = await grpc_client.is_server_live()
        result["grpc_ready"] = await grpc_client.is_server_ready()
        result["grpc_model_ready"] = await grpc_client.is_model_ready(model)
        result["grpc"] = _outputs(await grpc_client.infer(_request(model, binary=True)))
    finally:
        await grpc_client.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
