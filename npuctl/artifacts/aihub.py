"""Compile on Qualcomm AI Hub (`build.strategy: aihub`, the `aihub` extra): upload the prepared ONNX, one
compile job per target device with `--target_runtime precompiled_qnn_onnx`, wait, download, unpack into the
same `model_ctx.onnx` + `model_ctx_qnn.bin` a local compile writes. Verification stays local.

The API token comes from Credentials (the agent config) or qai-hub's own INI (`qai-hub configure`,
QAIHUB_CLIENT_INI); it is never put in messages. Jobs are submitted with qai-hub's own rate-limit retry off
(it prints and sleeps 20 s at a time): 429s are retried here with RATE_LIMIT_DELAYS, reported as progress.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from npuctl.artifacts import facts
from npuctl.artifacts.compile import compat_soc
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.graphs import MODEL_FILE
from npuctl.artifacts.result import StepEvent, StepRun, StepState
from npuctl.artifacts.steps import Runner
from npuctl.artifacts.store import Record
from npuctl.runtime import qnn
from npuctl.runtime.compat import CompatInfo
from npuctl.schema.models import ModelDeployment, Precision, Target
from npuctl.schema.targets import describe_soc

TARGET_RUNTIME = "precompiled_qnn_onnx"
RATE_LIMIT_DELAYS = (20.0, 40.0, 60.0, 60.0, 60.0)
"""Seconds to wait after each 429 before trying again; after the last, the build fails."""
POLL_SECONDS = 10.0
"""Between job status queries (qai-hub's own interval)."""
CONTEXT_MODEL = "model_ctx.onnx"
CONTEXT_BINARY = "model_ctx_qnn.bin"

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    """AI Hub API token; None: qai-hub's INI file."""
    api_url: str | None = None
    """AI Hub API endpoint; None: qai-hub's default (or the INI's)."""


@dataclass(frozen=True)
class Job:
    """How one compile job is asked for."""

    device: str
    """AI Hub device name, e.g. "Snapdragon X Elite CRD"."""
    options: str
    project: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Compiled:
    """A finished compile job and what its wrapper says it was compiled for and with."""

    job: str
    device: str
    info: CompatInfo


def compile_options(*, fp16: bool, qairt_version: str | None, extra: str) -> str:
    """The compile job's options: precompiled QNN ONNX, fp16 compute when asked (quantized models arrive as
    QDQ ONNX, calibrated here), and the QAIRT version: by default the one onnxruntime-qnn bundles here, since a
    context binary loads only into a QNN runtime at least as new as the SDK that compiled it."""
    options = [f"--target_runtime {TARGET_RUNTIME}"]
    if fp16:
        options.append("--quantize_full_type float16")
    version = qairt_version or _major_minor(qnn.sdk_version())
    if version:
        options.append(f"--qairt_version {version}")
    if extra.strip():
        options.append(extra.strip())
    return " ".join(options)


def compile_on_aihub(
    model: Path,
    out: Path,
    job: Job,
    *,
    credentials: Credentials | None = None,
    report: Callable[[str], None] = lambda message: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Compiled:
    """Compile `model` into `out/model_ctx.onnx` + `out/model_ctx_qnn.bin`. Raises BuildError on refusal, rate
    limit, failed job."""
    hub = _import_hub()
    client = _client(hub, credentials)
    submitted = _call(hub, lambda: client.submit_compile_job(
        str(model), device=hub.Device(job.device), name=job.name, options=job.options, project=job.project,
        retry=False), report, sleep, "submitting the compile job")
    report(f"AI Hub compile job {submitted.job_id} on {job.device}: submitted")
    status = _call(hub, submitted.get_status, report, sleep, "asking for the job status")
    while not status.finished:
        report(f"AI Hub compile job {submitted.job_id}: {status.code}")
        sleep(POLL_SECONDS)
        status = _call(hub, submitted.get_status, report, sleep, "asking for the job status")
    if status.failure:
        raise BuildError("compile", f"AI Hub compile job {submitted.job_id} for {job.device} failed: "
                         f"{status.message or 'no reason given'} ({submitted.url})")
    report(f"AI Hub compile job {submitted.job_id}: done, downloading")
    with tempfile.TemporaryDirectory() as tmp:
        target = _call(hub, submitted.get_target_model, report, sleep, "fetching the compiled model")
        if target is None:
            raise BuildError("compile", f"AI Hub compile job {submitted.job_id} succeeded but has no target model")
        # qai-hub prints "Downloaded model to ..." on stdout; a library keeps stdout for its caller.
        with contextlib.redirect_stdout(io.StringIO()):
            downloaded = Path(_call(hub, lambda: target.download(tmp), report, sleep, "downloading the compiled model"))
        info = unpack(downloaded, out)
    return Compiled(submitted.job_id, job.device, info)


def unpack(download: Path, out: Path) -> CompatInfo:
    """Turn AI Hub's precompiled_qnn_onnx result (an .onnx.zip bundle, or a bare wrapper) into
    `out/model_ctx.onnx` + `out/model_ctx_qnn.bin`, the wrapper pointing at the renamed binary."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if zipfile.is_zipfile(download):
            with zipfile.ZipFile(download) as bundle:
                bundle.extractall(folder)
        else:
            folder = download.parent
        wrappers = [p for p in sorted(folder.rglob("*.onnx")) if p.is_file() and _has_ep_context(p)]
        if len(wrappers) != 1:
            raise BuildError("compile", f"AI Hub's result {download.name} holds {len(wrappers)} EPContext models "
                             "(expected one)")
        wrapper = wrappers[0]
        model = onnx.load(str(wrapper), load_external_data=False)
        node = next(n for n in model.graph.node if n.op_type == "EPContext")
        attributes = {a.name: a for a in node.attribute}
        embedded = "embed_mode" in attributes and onnx.helper.get_attribute_value(attributes["embed_mode"]) == 1
        if embedded:
            (out / CONTEXT_BINARY).write_bytes(onnx.helper.get_attribute_value(attributes["ep_cache_context"]))
        else:
            name = onnx.helper.get_attribute_value(attributes["ep_cache_context"]).decode()
            binary = wrapper.parent / name
            if not binary.is_file():
                raise BuildError("compile", f"AI Hub's result {download.name}: {wrapper.name} refers to {name}, "
                                 "which it does not hold")
            (out / CONTEXT_BINARY).write_bytes(binary.read_bytes())
        for name, value in (("ep_cache_context", CONTEXT_BINARY.encode()), ("embed_mode", 0)):
            if name in attributes:
                node.attribute.remove(attributes[name])
            node.attribute.append(onnx.helper.make_attribute(name, value))
        onnx.save(model, str(out / CONTEXT_MODEL))
    info = CompatInfo.of_wrapper(out / CONTEXT_MODEL)
    local = qnn.sdk_version()
    if info.qnn_sdk and local and _version(info.qnn_sdk) > _version(local):
        raise BuildError("compile", f"AI Hub compiled with QNN {info.qnn_sdk}, newer than the {local} here, so "
                         "it would not load: set spec.build.aihub.qairtVersion to an older one")
    return info


def _import_hub() -> Any:
    try:
        import qai_hub
    except ImportError as exc:
        raise BuildError("compile", "build.strategy aihub needs the qai-hub client: pip install 'npuctl[aihub]'") from exc
    return qai_hub


def _client(hub: Any, credentials: Credentials | None) -> Any:
    if credentials is not None and credentials.token:
        config = hub.ClientConfig(api_token=credentials.token, verbose=False,
                                  **({"api_url": credentials.api_url} if credentials.api_url else {}))
        return hub.Client(config=config)
    client = hub.Client()
    try:
        client.config.verbose = False  # loads qai-hub's INI; its progress bars would go to our caller's terminal
    except hub.Error as exc:
        raise BuildError("compile", "no AI Hub API token: set aihubToken in the agent config, or run "
                         "`qai-hub configure --api_token <token>` (token from https://aihub.qualcomm.com account page)"
                         ) from exc
    return client


def _call(hub: Any, call: Callable[[], T], report: Callable[[str], None], sleep: Callable[[float], None],
          doing: str) -> T:
    """`call()`, with 429s retried after RATE_LIMIT_DELAYS and AI Hub's errors turned into BuildErrors."""
    from qai_hub.client import RateLimitedError

    for delay in (*RATE_LIMIT_DELAYS, None):
        try:
            return call()
        except RateLimitedError as exc:
            if delay is None:
                raise BuildError("compile", f"AI Hub kept answering 429 (too many requests) while {doing}, "
                                 f"{len(RATE_LIMIT_DELAYS)} retries over {sum(RATE_LIMIT_DELAYS):.0f} s; "
                                 "try again later", temporary=True) from exc
            report(f"AI Hub rate-limited {doing} (429); retrying in {delay:.0f} s")
            sleep(delay)
        except hub.UserError as exc:
            text = str(exc)
            if "authenticate" in text.lower():
                raise BuildError("compile", f"AI Hub refused the API token (401) while {doing}: set a valid one "
                                 "(aihubToken in the agent config, or `qai-hub configure --api_token <token>`)") from exc
            raise BuildError("compile", f"AI Hub refused {doing}: {_first_line(text)}") from exc
        except hub.Error as exc:
            raise BuildError("compile", f"AI Hub failed while {doing}: {_first_line(str(exc))}", temporary=True) from exc
    raise AssertionError("unreachable: the last delay is None")


def _has_ep_context(path: Path) -> bool:
    import onnx

    return any(n.op_type == "EPContext" for n in onnx.load(str(path), load_external_data=False).graph.node)


def _major_minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def compile_step(runner: Runner, deployment: ModelDeployment, target: Target, bucket: int,
                 compile_input: Record[facts.Facts], on: facts.Targeted,
                 credentials: Credentials | None) -> tuple[Record[facts.AihubCompile], StepRun]:
    """The `aihub-compile` step of one (target, bucket): its key is the prepared model, the device and the
    compile options, so a second build asks AI Hub nothing."""
    settings = deployment.spec.build.aihub
    device = settings.device or (target.soc.aihub_device if target.soc else None)
    if device is None:
        raise BuildError("compile", f"target {target.name} has no known AI Hub device: set "
                         "spec.build.aihub.device (a name from qai_hub.get_devices())")
    job = Job(device, compile_options(fp16=deployment.spec.precision is Precision.FP16,
                                      qairt_version=settings.qairt_version, extra=settings.options),
              settings.project, f"{deployment.name} {target.name} bucket {bucket}")
    inputs = {"model": compile_input.digest}
    parameters = on.model_dump(mode="json") | {"device": job.device, "options": job.options}
    key = runner.key(facts.AihubCompile.step, inputs, parameters)

    def report(message: str) -> None:
        runner.progress(StepEvent(facts.AihubCompile.step, StepState.RUNNING, key, target.name, bucket, message=message))

    def work(out: Path) -> facts.AihubCompile:
        compiled = compile_on_aihub(compile_input.path(MODEL_FILE), out, job, credentials=credentials, report=report)
        said = compat_soc(compiled.info.raw)
        if said not in (None, on.soc_model):
            raise BuildError("compile", f"AI Hub compiled for {describe_soc(said)} on {job.device}, but target "
                             f"{target.name} is {describe_soc(on.soc_model)}: set spec.build.aihub.device")
        return facts.AihubCompile(**on.model_dump(), ep_compatibility_info=compiled.info.raw, aihub_job=compiled.job,
                                  aihub_device=compiled.device, qnn_sdk_compiled=compiled.info.qnn_sdk)

    return runner.run(facts.AihubCompile, inputs, parameters, work, target=target.name, bucket=bucket)
