"""The gRPC adapter: OIP v2 ``inference.GRPCInferenceService`` over the data plane (grpc.aio).

The gRPC twin of ``server.app``: it turns protobuf messages into what the data plane takes (an
infer request in the OIP binary layout, so both transports share one parser, its limits and its
error messages), maps domain errors to gRPC status codes in one table, checks the bearer token
and counts every call in the same metrics as HTTP. It runs on the event loop of the HTTP
server, so both share the admission queue, the batcher and the drain.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NoReturn, TypeVar

import grpc
import orjson
from google.protobuf.message import Message

from mmop.runtime import contract, protocol
from mmop.runtime.dataplane import DataPlane
from mmop.runtime.errors import (
    BodyTimeout,
    Draining,
    FaultInjected,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    QueueTimeout,
    RuntimeFailure,
    Unauthorized,
    one_line,
)
from mmop.runtime.server.errors import status_of
from mmop.runtime.server.middleware import is_genuine_smoke_test
from mmop.runtime.server.oip import oip_v2_pb2 as pb

log = logging.getLogger(__name__)

SERVICE: Final = "inference.GRPCInferenceService"
AUTH_KEY: Final = "authorization"
SMOKE_KEY: Final = contract.SMOKE_TEST_HEADER.lower()
# Metrics ``code`` of calls that ended without an answer: the client's deadline passed (as a
# gateway timeout), or the client cancelled (nginx's "client closed request").
CODE_DEADLINE: Final = 504
CODE_CANCELLED: Final = 499

STATUS: Final[dict[type[RuntimeFailure], grpc.StatusCode]] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Draining: grpc.StatusCode.UNAVAILABLE,
    QueueTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    BodyTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    FaultInjected: grpc.StatusCode.INTERNAL,
}

_TYPED_CONTENTS: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def grpc_status_of(error: RuntimeFailure) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return grpc.StatusCode.INTERNAL


# --- protobuf <-> the data plane's wire format ------------------------------------------------


def _parameter(value: pb.InferParameter) -> protocol.Scalar | None:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _parameters(raw: Mapping[str, pb.InferParameter]) -> dict[str, protocol.Scalar]:
    out: dict[str, protocol.Scalar] = {}
    for key, value in raw.items():
        scalar = _parameter(value)
        if scalar is not None:
            out[key] = scalar
    return out


def infer_body(request: pb.ModelInferRequest) -> tuple[bytes, int]:
    """The request as an OIP v2 body with binary tensor data, and the length of its JSON part
    (``Inference-Header-Content-Length``), for ``protocol.parse_infer_request``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, or none and use contents"
        )
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for position, tensor in enumerate(request.inputs):
        if raw:
            data = raw[position]
        else:
            field = _TYPED_CONTENTS.get(tensor.datatype)
            if field is None:  # FP16 and friends have no typed field; the parser names DATATYPES
                if tensor.datatype in protocol.DATATYPES:
                    raise InvalidInput(
                        f"input {tensor.name!r}: {tensor.datatype} data must be sent in "
                        "raw_input_contents"
                    )
                data = b""
            else:
                data = protocol.raw_tensor(tensor.datatype, list(getattr(tensor.contents, field)))
        parameters: dict[str, Any] = _parameters(tensor.parameters)
        parameters["binary_data_size"] = len(data)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": parameters,
            }
        )
        chunks.append(data)
    document: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request.parameters)}
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [{"name": output.name} for output in request.outputs]
    header = orjson.dumps(document)
    return header + b"".join(chunks), len(header)


def infer_response(document: Mapping[str, Any]) -> pb.ModelInferResponse:
    """The data plane's OIP v2 response document as a ``ModelInferResponse`` (raw contents, as
    Triton answers)."""
    response = pb.ModelInferResponse(
        model_name=document["model_name"],
        model_version=document.get("model_version", ""),
        id=document.get("id") or "",
    )
    for output in document["outputs"]:
        response.outputs.add(
            name=output["name"], datatype=output["datatype"], shape=output["shape"]
        )
        response.raw_output_contents.append(protocol.raw_tensor(output["datatype"], output["data"]))
    return response


def model_metadata_response(document: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=document["name"],
        versions=document.get("versions", []),
        platform=document.get("platform", ""),
    )
    for spec in document.get("inputs", []):
        response.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    for spec in document.get("outputs", []):
        response.outputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    return response


# --- the service ----------------------------------------------------------------------------


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str | bytes]:
    return {key.lower(): value for key, value in context.invocation_metadata() or ()}


class InferenceService:
    """The RPCs of ``inference.GRPCInferenceService``; each one answers or aborts with the status
    of the domain error, and is counted in ``mmop_requests_total``."""

    def __init__(self, plane: DataPlane, *, token: str = "", smoke_token: str = "") -> None:
        self.plane = plane
        self.metrics = plane.metrics
        self._expected = ("bearer " + token).encode("utf-8") if token else None
        self._smoke_token = smoke_token.encode("utf-8") if smoke_token else None

    def _is_smoke_test(self, metadata: Mapping[str, str | bytes]) -> bool:
        """The operator's test inference: the smoke-test metadata with this pod's token (any
        other value is ordinary traffic, as over HTTP)."""
        given = metadata.get(SMOKE_KEY)
        raw = given.encode("utf-8") if isinstance(given, str) else given
        return is_genuine_smoke_test(raw, self._smoke_token)

    # --- plumbing -------------------------------------------------------------------------------

    def _check_token(self, metadata: Mapping[str, str | bytes]) -> None:
        if self._expected is None:
            return
        given = metadata.get(AUTH_KEY)
        if given is None:
            raise Unauthorized("this call needs metadata 'authorization: Bearer <token>'")
        raw = given.encode("utf-8") if isinstance(given, str) else given
        scheme, _, token = raw.partition(b" ")
        if not hmac.compare_digest(scheme.lower() + b" " + token.strip(), self._expected):
            raise Unauthorized("the bearer token is not valid")

    async def _fail(
        self, context: grpc.aio.ServicerContext[Any, Any], error: BaseException
    ) -> NoReturn:
        if not isinstance(error, RuntimeFailure):
            log.error("unexpected error: %s: %s", type(error).__name__, one_line(error))
            error = InferenceFailed("internal error")
        if error.reason is not None:
            self.metrics.observe_rejected(error.reason)
        trailers: tuple[tuple[str, str], ...] = ()
        if isinstance(error, QueueFull):
            trailers = (("retry-after", str(error.retry_after)),)
        elif isinstance(error, NotReady | Draining):
            trailers = (("retry-after", "1"),)
        await context.abort(grpc_status_of(error), error.message, trailers)

    async def _call(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        endpoint: str,
        answer: Callable[[Mapping[str, str | bytes]], Awaitable[Resp]],
        protected: bool = False,
    ) -> Resp:
        started = time.perf_counter()
        code = CODE_CANCELLED
        metadata = _metadata(context)
        if endpoint == contract.ENDPOINT_GRPC_INFER and self._is_smoke_test(metadata):
            endpoint = contract.ENDPOINT_SMOKE
        try:
            try:
                if protected:
                    self._check_token(metadata)
                response = await answer(metadata)
            except Exception as exc:
                code = status_of(exc) if isinstance(exc, RuntimeFailure) else 500
                await self._fail(context, exc)
            code = 200
            return response
        except asyncio.CancelledError:
            # grpc cancels the handler when the client cancels or its deadline passes.
            remaining = context.time_remaining()
            code = CODE_DEADLINE if remaining is not None and remaining <= 0 else CODE_CANCELLED
            raise
        finally:
            self.metrics.observe_request(
                endpoint=endpoint, code=code, seconds=time.perf_counter() - started
            )

    # --- RPCs -----------------------------------------------------------------------------------

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        async def answer(_: Mapping[str, str | bytes]) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=self.plane.live())

        return await self._call(context, endpoint=contract.ENDPOINT_HEALTH, answer=answer)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        async def answer(_: Mapping[str, str | bytes]) -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.plane.not_ready_reason() is None)

        return await self._call(context, endpoint=contract.ENDPOINT_HEALTH, answer=answer)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        async def answer(_: Mapping[str, str | bytes]) -> pb.ModelReadyResponse:
            ready = self.plane.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await self._call(
            context, endpoint=contract.ENDPOINT_HEALTH, answer=answer, protected=True
        )

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        async def answer(_: Mapping[str, str | bytes]) -> pb.ServerMetadataResponse:
            document = self.plane.server_metadata()
            return pb.ServerMetadataResponse(
                name=document["name"],
                version=document["version"],
                extensions=document["extensions"],
            )

        return await self._call(context, endpoint=contract.ENDPOINT_METADATA, answer=answer)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        async def answer(_: Mapping[str, str | bytes]) -> pb.ModelMetadataResponse:
            document = self.plane.model_metadata(request.name, request.version or None)
            return model_metadata_response(document)

        return await self._call(
            context, endpoint=contract.ENDPOINT_METADATA, answer=answer, protected=True
        )

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        plane = self.plane

        async def answer(metadata: Mapping[str, str | bytes]) -> pb.ModelInferResponse:
            version = request.model_version or None
            plane.check_model(request.model_name, version)
            # grpc core has already received the whole message (bounded by
            # max_receive_message_length), so its size is known before a slot is taken.
            with plane.admission.admit(body_bytes=request.ByteSize()) as admission:
                body, header_length = infer_body(request)
                document = await plane.infer(
                    request.model_name,
                    body,
                    admission=admission,
                    header_length=header_length,
                    version=version,
                    smoke_test=self._is_smoke_test(metadata),
                )
            return infer_response(document)

        return await self._call(
            context, endpoint=contract.ENDPOINT_GRPC_INFER, answer=answer, protected=True
        )

    # --- registration ---------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """The method handlers of the service (what protoc's ``*_pb2_grpc`` would register)."""
        methods: Sequence[tuple[str, Callable[..., Any], type[Message]]] = (
            ("ServerLive", self.server_live, pb.ServerLiveRequest),
            ("ServerReady", self.server_ready, pb.ServerReadyRequest),
            ("ModelReady", self.model_ready, pb.ModelReadyRequest),
            ("ServerMetadata", self.server_metadata, pb.ServerMetadataRequest),
            ("ModelMetadata", self.model_metadata, pb.ModelMetadataRequest),
            ("ModelInfer", self.model_infer, pb.ModelInferRequest),
        )
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    method,
                    request_deserializer=message.FromString,
                    response_serializer=_serialize,
                )
                for name, method, message in methods
            },
        )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def listen_address(host: str, port: int) -> str:
    """``host:port`` for grpc (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def create_server(plane: DataPlane) -> grpc.aio.Server:
    """A grpc.aio server bound to ``host:grpc_port`` (raises ``RuntimeError`` when the port
    cannot be bound); start it on the running loop with ``await server.start()``."""
    settings = plane.settings
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    smoke = settings.smoke_test_token.get_secret_value() if settings.smoke_test_token else ""
    server = grpc.aio.server(
        options=[
            # The same body limit as HTTP (gRPC answers RESOURCE_EXHAUSTED beyond it).
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", -1),
            # A taken port must fail, as it does for HTTP, not be shared with another process.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (InferenceService(plane, token=token, smoke_token=smoke).handler(),)
    )
    address = listen_address(settings.host, settings.grpc_port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on {address} for gRPC: {one_line(exc)}") from None
    if bound == 0:
        raise RuntimeError(f"cannot listen on {address} for gRPC")
    return server
