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

from mmop.runtime import contract, loading, preprocessing, protocol, tasks
from mmop.runtime.admission import Admission, AdmissionControl
from mmop.runtime.errors import InvalidInput, echo
from mmop.runtime.faults import Faults
from mmop.runtime.lifecycle import CreateTask, LoadModel, ModelLifecycle
from mmop.runtime.metrics import Metrics
from mmop.runtime.protocol import OutputTensor
from mmop.runtime.settings import RuntimeSettings

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
        preprocessing.check_model(self.settings, name, version)

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
            processes = self.lifecycle.processes
            if processes is not None:
                request, prepared = await ticket.timed_async(processes.infer(body, header_length))
            else:
                request, prepared = await self._in_pool(
                    ticket.timed(preprocessing.prepare_infer),
                    task,
                    self.settings,
                    body,
                    header_length,
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

    async def embeddings(self, body: bytes, *, admission: Admission) -> dict[str, Any]:
        """Answer an OpenAI ``/v1/embeddings`` request (raw body)."""
        await self.faults.before_request()
        task, batcher = self.lifecycle.running()
        with batcher.incoming() as ticket:
            processes = self.lifecycle.processes
            if processes is not None:
                request, prepared = await ticket.timed_async(processes.embeddings(body))
            else:
                request, prepared = await self._in_pool(
                    ticket.timed(preprocessing.prepare_embeddings), task, self.settings, body
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
