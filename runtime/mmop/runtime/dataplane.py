"""The transport-neutral data plane: the protocol dispatch of one model (OIP v2 metadata and
infer, OpenAI embeddings) over its lifecycle (:mod:`lifecycle`: load, warm-up, live/ready) and
its admission (:mod:`admission`: the bounded queue and draining).

HTTP and gRPC adapters call it with raw bodies and get documents back or a ``RuntimeFailure``;
it knows nothing about status codes, and tasks only through the ``Task`` interface. Everything
here runs on the event loop except what it hands to the decoding pool (parsing, decoding,
preprocessing) and to the batcher's worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Final, ParamSpec, TypeVar

from mmop.runtime import contract, loading, protocol, tasks
from mmop.runtime.admission import Admission, AdmissionControl
from mmop.runtime.errors import InvalidInput, LoadError, ModelNotFound, detail, echo
from mmop.runtime.faults import Faults
from mmop.runtime.lifecycle import CreateTask, LoadModel, ModelLifecycle
from mmop.runtime.metrics import Metrics
from mmop.runtime.protocol import EmbeddingsRequest, InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import EmbedsItems, Prepared, Task

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SERVER_NAME: Final = "mmop-runtime"
PLATFORM: Final = "transformers"
EXTENSIONS: Final = ("binary_tensor_data",)


def _package_version() -> str:
    try:
        return metadata.version("mmop")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


class DataPlane:
    """One model: its lifecycle and admission, and the requests of both protocols run through
    its task and batcher. ``load_model`` and ``create_task`` go to :class:`ModelLifecycle`."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        metrics: Metrics,
        source: loading.ModelSource,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        load_model: LoadModel = loading.load_model,
        create_task: CreateTask = tasks.create_task,
    ) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.version = settings.model_version
        self.signature = tasks.signature(settings.task)
        self.metrics = metrics
        self.lifecycle = ModelLifecycle(
            settings,
            metrics=metrics,
            source=source,
            clock=clock,
            load_model=load_model,
            create_task=create_task,
        )
        self.admission = AdmissionControl(
            metrics=metrics,
            plan=lambda: self.lifecycle.memory_plan,
            not_ready=self.lifecycle.not_ready_reason,
            clock=clock,
        )
        self.faults = Faults(settings, rng=rng)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads, thread_name_prefix="mmop-decode"
        )

    async def close(self) -> None:
        """Stop the batcher (after what it runs) and the decoding pool."""
        await self.lifecycle.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- probes -------------------------------------------------------------------------------

    def live(self) -> bool:
        """The event loop answers (we are here) and a started batcher is neither dead nor stuck."""
        return self.lifecycle.live()

    def not_ready_reason(self) -> str | None:
        """None when ready: model loaded, warm-up done, batcher alive, not draining."""
        if self.admission.draining:
            return "the server is shutting down"
        return self.lifecycle.not_ready_reason()

    # --- metadata -----------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": _package_version(), "extensions": list(EXTENSIONS)}

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ModelNotFound(
                f"model {echo(name)} is not served here; this server serves {self.name!r}"
            )
        if version is not None and version != self.version:
            known = repr(self.version) if self.version else "none"
            raise ModelNotFound(
                f"model {echo(name)} has no version {echo(version)} (served: {known})"
            )

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.check_model(name, version)
        task = self.lifecycle.task
        shapes = task.output_shapes() if task is not None else {}
        parameters: dict[str, Any] = {
            "task": self.settings.task,
            "max_batch_size": self.settings.max_batch_size,
            "request_parameters": list(self.signature.parameters),
        }
        if task is not None:
            parameters |= task.metadata_parameters()
        parameters |= self.lifecycle.memory_plan.metadata()
        document: dict[str, Any] = {"name": self.name}
        if self.version:
            document["versions"] = [self.version]
        document |= {
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in self.signature.inputs],
            "outputs": [spec.metadata(shapes.get(spec.name)) for spec in self.signature.outputs],
            "parameters": parameters,
        }
        return document

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.check_model(name, version)
        return self.not_ready_reason() is None

    @property
    def serves_embeddings(self) -> bool:
        return self.settings.task == contract.TASK_IMAGE_TEXT_EMBEDDING

    # --- inference ----------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        body: bytes,
        *,
        admission: Admission,
        header_length: int | None = None,
        version: str | None = None,
        smoke_test: bool = False,
    ) -> dict[str, Any]:
        """Answer an OIP v2 infer request (raw body) with the response document."""
        self.check_model(name, version)
        await self.faults.before_request(smoke_test=smoke_test)
        task, batcher = self.lifecycle.running()
        with batcher.incoming() as ticket:
            request, prepared = await self._in_pool(
                ticket.timed(self._prepare_infer), task, body, header_length
            )
            results = await batcher.submit(
                prepared.samples, admitted_at=admission.admitted_at, ticket=ticket
            )
        outputs = _select_outputs(task.postprocess(prepared, results), request.outputs)
        outputs = self.faults.answers(outputs, smoke_test=smoke_test)
        return protocol.infer_response(
            model_name=self.name,
            model_version=self.version,
            request_id=request.id,
            outputs=outputs,
        )

    def _prepare_infer(
        self, task: Task, body: bytes, header_length: int | None
    ) -> tuple[InferRequest, Prepared]:
        request = protocol.parse_infer_request(
            body, header_length=header_length, max_items=self.settings.max_items_per_request
        )
        names = self.signature.input_names
        unknown = [name for name in request.inputs if name not in names]
        if unknown:
            raise InvalidInput(
                f"unknown input {echo(unknown[0])}; model {self.name} takes {', '.join(names)}"
            )
        outputs = self.signature.output_names
        for name in request.outputs or ():
            if name not in outputs:
                raise InvalidInput(
                    f"unknown output {echo(name)}; model {self.name} produces {', '.join(outputs)}"
                )
        return request, self._preprocess(task.preprocess, request)

    async def embeddings(self, body: bytes, *, admission: Admission) -> dict[str, Any]:
        """Answer an OpenAI ``/v1/embeddings`` request (raw body)."""
        await self.faults.before_request()
        task, batcher = self.lifecycle.running()
        with batcher.incoming() as ticket:
            request, prepared = await self._in_pool(
                ticket.timed(self._prepare_embeddings), task, body
            )
            results = await batcher.submit(
                prepared.samples, admitted_at=admission.admitted_at, ticket=ticket
            )
        vectors = [result[0] for result in results]
        tokens = sum(int(result[1]) for result in results)
        return protocol.embeddings_response(
            model_name=self.name,
            vectors=vectors,
            encoding_format=request.encoding_format,
            prompt_tokens=tokens,
        )

    def _prepare_embeddings(self, task: Task, body: bytes) -> tuple[EmbeddingsRequest, Prepared]:
        request = protocol.parse_embeddings_request(
            body,
            max_items=self.settings.max_items_per_request,
            max_text_chars=self.settings.max_text_chars,
        )
        self.check_model(request.model)
        if not isinstance(task, EmbedsItems):  # serves_embeddings guards the route
            raise InvalidInput(f"model {self.name} does not answer /v1/embeddings")
        if request.dimensions is not None and request.dimensions != task.dims:
            raise InvalidInput(
                f"'dimensions' must be {task.dims} for this model (or left out), "
                f"got {request.dimensions}"
            )
        return request, self._preprocess(task.preprocess_items, request.items)

    @staticmethod
    def _preprocess(step: Callable[[Any], Prepared], argument: Any) -> Prepared:
        try:
            return step(argument)
        except (InvalidInput, LoadError):
            raise
        except Exception as exc:
            # Processors raise plain exceptions for inputs they cannot handle (odd image modes,
            # sizes); the input caused it, and the message says what the processor disliked.
            log.warning("preprocessing failed: %s", loading.one_line(exc))
            raise InvalidInput(f"the input could not be preprocessed: {detail(exc)}") from exc

    async def _in_pool(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))


def _select_outputs(
    outputs: list[OutputTensor], requested: Sequence[str] | None
) -> list[OutputTensor]:
    if requested is None:
        return outputs
    produced = {output.name: output for output in outputs}
    missing = [name for name in requested if name not in produced]
    if missing:
        raise InvalidInput(
            f"output {echo(missing[0])} is not produced for this request (its inputs are missing)"
        )
    return [produced[name] for name in dict.fromkeys(requested)]
