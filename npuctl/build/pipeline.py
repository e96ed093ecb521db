"""The build graph of one deployment: content-addressed steps from the source to verified context binaries."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from npuctl.build import compile as qnn_compile
from npuctl.build import aihub, export, fetch, genai, graphs, inputs, packs, quantize, verify
from npuctl.build.errors import AccuracyError, BuildError, NotBuiltError
from npuctl.build.result import (
    AccuracyResult,
    BuildResult,
    NpuArtifact,
    ProgressCallback,
    StepEvent,
    StepRun,
    StepState,
)
from npuctl.build.sources import ResolvedSource, SourceContext, buildable, resolve
from npuctl.build.store import Record, Store
from npuctl.runtime import pooling, qnn
from npuctl.schema.loader import LoadedDeployment
from npuctl.schema.models import Format, Metric, ModelDeployment, Precision, Strategy, Target, Task
from npuctl.schema.targets import describe_soc

MODEL = "model.onnx"
DEFAULT_THRESHOLDS = {Metric.COSINE: 0.98, Metric.MAX_ABS_ERROR: 0.05}
_CALIBRATION_SEED, _HELD_OUT_SEED = 0, 1


def build_deployment(
    deployment: ModelDeployment | LoadedDeployment,
    *,
    store: Store | None = None,
    base_dir: Path | None = None,
    targets: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cached_only: bool = False,
    for_soc: int | None = None,
    aihub_credentials: aihub.Credentials | None = None,
    published: Sequence[str] = (),
) -> BuildResult:
    """Build (or find in the store) everything `deployment` needs. Every step whose key is stored is skipped,
    so a fully built deployment returns after re-hashing its files and running nothing.

    base_dir: the folder `file:` sources and calibration files are relative to (default: the manifest's
    folder for a LoadedDeployment, else the current directory). targets: aliases (or soc<N>) to limit the
    build to. cached_only: run no step; raise NotBuiltError if one is missing (adopting a store on restart).
    for_soc: the SoC of the device that will load the result (an agent's): only its targets are built, and
    when none is declared for it but the model can be compiled, it is compiled for that SoC instead.
    aihub_credentials: for `build.strategy: aihub` (default: qai-hub's own INI file).
    published: artifact stores (folders or http(s) URLs, npuctl.build.publish layout) asked for each missing
    step before it runs, in order; a step fetched from one is not run (with `cached_only` too).
    Raises BuildError (AccuracyError when verify measures below the bar)."""
    if isinstance(deployment, LoadedDeployment):
        base_dir = base_dir or deployment.file.parent
        deployment = deployment.deployment
    runner = _Runner(store or Store(), progress or (lambda event: None), cached_only,
                     [fetch.open_source(location) for location in published])
    build = _Build(deployment, Path(base_dir or Path.cwd()), runner, for_soc=for_soc,
                   aihub_credentials=aihub_credentials)
    try:
        return build.run(_pick_targets(deployment, targets))
    finally:
        for source in runner.published:
            source.close()


@dataclass(frozen=True)
class Survey:
    """How far a deployment is built, found without running anything."""

    stored: tuple[StepRun, ...]
    """Steps found in the store, in build order."""
    next_step: str | None
    """The first step a build would run (later ones depend on its output); None when all is built."""


def survey(deployment: LoadedDeployment, *, store: Store, base_dir: Path | None = None) -> Survey:
    """What is stored and what a build would run next (for dry runs and garbage collection). Runs nothing."""
    runner = _Runner(store, lambda event: None, cached_only=True)
    build = _Build(deployment.deployment, base_dir or deployment.file.parent, runner, partial=True)
    try:
        build.run(list(deployment.deployment.spec.targets))
    except NotBuiltError as exc:
        return Survey(tuple(runner.runs.values()), exc.step)
    return Survey(tuple(runner.runs.values()), build.missing)


def referenced_keys(deployment: LoadedDeployment, *, store: Store) -> set[str]:
    """Keys of the stored steps a deployment uses, as far as it is built (for garbage collection)."""
    return {run.key for run in survey(deployment, store=store).stored}


def step_key(step: str, inputs: dict[str, str], parameters: dict[str, Any], tool_versions: dict[str, str]) -> str:
    blob = json.dumps({"step": step, "inputs": inputs, "parameters": parameters, "tools": tool_versions},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class _Runner:
    """Runs steps through the store: look up by key, else build in a work folder under the key's lock."""

    def __init__(self, store: Store, progress: ProgressCallback, cached_only: bool,
                 published: Sequence[fetch.ArtifactSource] = ()) -> None:
        self.store = store
        self.progress = progress
        self.cached_only = cached_only
        self.published = published
        self.tools = qnn.tool_versions()
        self.runs: dict[str, StepRun] = {}

    def run(
        self,
        step: str,
        inputs: dict[str, str],
        parameters: dict[str, Any],
        work: Callable[[Path], dict[str, Any]],
        *,
        target: str | None = None,
        bucket: int | None = None,
    ) -> tuple[Record, StepRun]:
        """`work(folder)` writes the step's files into `folder` and returns facts for the record."""
        key = step_key(step, inputs, parameters, self.tools)
        started = time.perf_counter()
        record = self.store.get(key)
        if record is None and self.cached_only and not self.published:
            raise NotBuiltError(step, f"not in the store {self.store.root} (key {key[:12]})")
        if record is None:
            with self.store.lock(key):
                record = self.store.get(key)  # another builder may have finished it while we waited
                if record is None:
                    record = self._fetch(step, key, target, bucket)
                    seconds = time.perf_counter() - started
                    if record is None and self.cached_only:
                        raise NotBuiltError(step, f"not in the store {self.store.root} nor published (key {key[:12]})")
                    if record is None:
                        record = self._execute(step, key, inputs, parameters, work, target, bucket)
                        seconds = record.seconds
                    run = StepRun(step, key, False, seconds)
                    self.runs.setdefault(key, run)
                    return record, self.runs[key]
        self.progress(StepEvent(step, StepState.CACHED, key, target, bucket, time.perf_counter() - started))
        run = self.runs.setdefault(key, StepRun(step, key, True, time.perf_counter() - started))
        return record, run

    def _fetch(self, step: str, key: str, target: str | None, bucket: int | None) -> Record | None:
        """The step from the first published store that has it, committed to the local store; None if none has."""
        for source in self.published:
            started = time.perf_counter()
            folder = self.store.new_workdir(key)
            try:
                found = fetch.fetch_step(source, step, key, folder)
            except fetch.FetchError as exc:
                # A broken or unreachable store costs a local build, never the deployment.
                self.progress(StepEvent(step, StepState.RUNNING, key, target, bucket, message=f"not fetched: {exc}"))
                found = None
            if found is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            record = self.store.commit(folder, step=step, key=key, inputs=found.inputs, parameters=found.parameters,
                                       tool_versions=found.tool_versions, seconds=found.seconds, details=found.details)
            self.progress(StepEvent(step, StepState.FETCHED, key, target, bucket, time.perf_counter() - started,
                                    message=source.location))
            return record
        return None

    def _execute(self, step: str, key: str, inputs: dict[str, str], parameters: dict[str, Any],
                 work: Callable[[Path], dict[str, Any]], target: str | None, bucket: int | None) -> Record:
        self.progress(StepEvent(step, StepState.RUNNING, key, target, bucket))
        folder = self.store.new_workdir(key)
        started = time.perf_counter()
        try:
            details = work(folder)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            error = exc if isinstance(exc, BuildError) else BuildError(step, f"{type(exc).__name__}: {exc}")
            self.progress(StepEvent(step, StepState.FAILED, key, target, bucket,
                                    time.perf_counter() - started, error.message))
            if error is exc:
                raise
            raise error from exc
        seconds = time.perf_counter() - started
        record = self.store.commit(folder, step=step, key=key, inputs=inputs, parameters=parameters,
                                   tool_versions=self.tools, seconds=seconds, details=details)
        self.progress(StepEvent(step, StepState.DONE, key, target, bucket, seconds))
        return record


@dataclass(frozen=True)
class _Fp32:
    """The dynamic fp32 model every NPU graph is derived from."""

    path: Path
    digest: str
    model_dir: Path
    steps: tuple[StepRun, ...]


class _Build:
    def __init__(self, deployment: ModelDeployment, base_dir: Path, runner: _Runner, partial: bool = False,
                 for_soc: int | None = None, aihub_credentials: aihub.Credentials | None = None) -> None:
        self.deployment = deployment
        self.partial = partial
        self.missing: str | None = None
        """With `partial`: the first step found missing (the rest of its bucket depends on it)."""
        """Skip (target, bucket) branches whose steps are missing instead of failing: to list what is built."""
        self.spec = deployment.spec
        self.base_dir = base_dir
        self.runner = runner
        self.for_soc = for_soc
        self.aihub_credentials = aihub_credentials
        self.model_dir: Path | None = None

    def run(self, targets: list[Target]) -> BuildResult:
        if self.spec.model.task is Task.TEXT_GENERATION:
            declared = self.spec.model
            source, resolve_run = self._resolve(declared.source, declared.format, declared.sha256)
            return genai.build_generation(self.deployment, source, resolve_run,
                                          self.runner.run)
        model, pack, resolve_runs = self._sources()
        strategy = self.spec.build.strategy
        entries = packs.scan(pack.path) if pack and strategy in (Strategy.AUTO, Strategy.PREBUILT) else []
        compilable = model is not None and buildable(model) and strategy is not Strategy.PREBUILT
        targets = self._for_device(targets, compilable)
        from_pack = {t.name: packs.for_soc(entries, t.soc_model or 0, pack.uri) for t in targets} if pack else {}
        to_compile = [t for t in targets if not from_pack.get(t.name)]
        if to_compile and not compilable and self.spec.precision is not Precision.FP32:
            raise BuildError("prebuilt", self._why_not_compiled(to_compile, model, pack, entries))
        fp32 = self._fp32(model, resolve_runs[0]) if model is not None and buildable(model) else None
        self.model_dir = fp32.model_dir if fp32 else pack.folder if pack else None
        tokenizer = self._tokenizer(self.model_dir)
        artifacts: list[NpuArtifact] = []
        for target in targets:
            for entry in from_pack.get(target.name, []):
                artifacts.append(self._import(target, entry, pack, resolve_runs))  # type: ignore[arg-type]
        if fp32 is not None and to_compile and self.spec.precision is not Precision.FP32:
            specs, sequence_axis = _inputs(fp32.path)
            buckets = self.spec.shapes.sequence_lengths if sequence_axis else [0]
            for bucket in buckets:
                try:
                    artifacts += self._bucket(fp32, specs, bucket, tokenizer, to_compile)
                except NotBuiltError as exc:
                    if not self.partial:
                        raise
                    self.missing = self.missing or exc.step
        sources = tuple(s for s in (model, pack) if s is not None)
        return BuildResult(self.deployment.name, self.spec.model.task, self.spec.precision,
                           fp32.path if fp32 else None, self.model_dir or self.base_dir, tokenizer, tuple(artifacts),
                           (*resolve_runs, *self.runner.runs.values()), sources)

    def _sources(self) -> tuple[ResolvedSource | None, ResolvedSource | None, tuple[StepRun, ...]]:
        """(the model, the prebuilt pack) — either may be None — and their resolve runs."""
        model_spec = self.spec.model
        model, model_run = self._resolve(model_spec.source, model_spec.format, model_spec.sha256)
        pack_uri = self.spec.build.prebuilt.source
        if model.format is Format.EP_CONTEXT:
            if pack_uri:
                raise BuildError("resolve", f"{model.uri} is itself a prebuilt pack; spec.build.prebuilt.source is "
                                 "for a pack beside a buildable model: drop one of them")
            return None, model, (model_run,)
        if model.format is Format.GENAI:
            raise BuildError("resolve", f"{model.uri}: onnxruntime-genai folders are not built or served yet")
        if not pack_uri:
            return model, None, (model_run,)
        pack, pack_run = self._resolve(pack_uri, Format.EP_CONTEXT, {})
        return model, pack, (model_run, pack_run)

    def _resolve(self, uri: str, declared: Format, pins: dict[str, str]) -> tuple[ResolvedSource, StepRun]:
        started = time.perf_counter()
        context = SourceContext(self.base_dir, self.runner.store, pins, self.spec.model.insecure_skip_digest,
                                cached_only=self.runner.cached_only)
        source = resolve(uri, context, declared)
        # Sources are read in place (local files, the Hugging Face cache) or from stored downloads: resolving
        # itself stores nothing, so it is always "cached".
        seconds = time.perf_counter() - started
        self.runner.progress(StepEvent("resolve", StepState.CACHED, source.digest, seconds=seconds))
        return source, StepRun("resolve", source.digest, True, seconds)

    def _for_device(self, targets: list[Target], compilable: bool) -> list[Target]:
        if self.for_soc is None:
            return targets
        mine = [t for t in targets if t.soc_model == self.for_soc]
        if mine or not compilable:
            # With nothing to compile from, the declared targets are fetched as they are; loading them on this
            # device then fails with the reason (built for another SoC) instead of the build failing here.
            return mine or targets
        return [Target.model_validate({"socModel": self.for_soc})]

    def _why_not_compiled(self, targets: list[Target], model: ResolvedSource | None, pack: ResolvedSource | None,
                          entries: list[packs.PackEntry]) -> str:
        wanted = ", ".join(f"{t.name} ({describe_soc(t.soc_model or 0)})" for t in targets)
        has = f"{pack.uri} holds {packs.holds(entries)}" if pack else "there is no prebuilt pack"
        if model is None:
            fix = "give a buildable source too (spec.model.source, with the pack in spec.build.prebuilt.source)"
        elif not buildable(model):
            fix = f"spec.model.source {model.uri} is {model.format.value}, which can't be compiled here"
        else:
            fix = "build.strategy is prebuilt: use auto to compile what the pack lacks"
        return f"no context binary for {wanted}: {has}; {fix}"

    def _import(self, target: Target, entry: packs.PackEntry, pack: ResolvedSource,
                resolve_runs: tuple[StepRun, ...]) -> NpuArtifact:
        relative = entry.path.relative_to(pack.folder).as_posix()

        def work(out: Path) -> dict[str, Any]:
            return packs.import_entry(entry, out)

        record, run = self.runner.run("import-pack", {"pack": pack.digest}, {"graph": relative},
                                      work, target=target.name, bucket=entry.bucket)
        details = record.details
        return NpuArtifact(
            target=target.name, soc_model=details["soc_model"], htp_arch=details["htp_arch"],
            precision=self.spec.precision, batch=self.spec.shapes.batch, bucket=entry.bucket,
            context_model=record.path(packs.WRAPPER_FILE), context_binary=record.path(details["context_binary"]),
            qdq_model=None, static_model=None, accuracy=None,
            # An EPContext wrapper is one node, and it runs on the QNN EP or not at all.
            npu_coverage=1.0, qnn_sdk=details["qnn_sdk"], files=record.files, steps=(*resolve_runs, run),
            origin="prebuilt", compatibility=details["ep_compatibility_info"])

    def _fp32(self, source: ResolvedSource, resolve_run: StepRun) -> _Fp32:
        if source.format is Format.ONNX:
            return _Fp32(source.path, source.digest, source.folder, (resolve_run,))
        parameters = {"opset": export.OPSET, "torch": _dist_version("torch"),
                      "transformers": _dist_version("transformers")}

        def work(out: Path) -> dict[str, Any]:
            return {"input_names": export.export_transformers(source.path, out)}

        record, run = self.runner.run("export", {"source": source.digest}, parameters, work)
        return _Fp32(record.path(export.MODEL_FILE), record.digest, record.folder, (resolve_run, run))

    def _tokenizer(self, model_dir: Path | None) -> Path | None:
        if model_dir is None:
            return None
        if self.spec.model.tokenizer:
            # A tokenizer named in the manifest is relative to the source; exports copy it beside the model.
            named = model_dir / self.spec.model.tokenizer
            return named if named.is_file() else None
        default = model_dir / "tokenizer.json"
        return default if default.is_file() else None

    def _bucket(self, fp32: _Fp32, specs: list[graphs.InputSpec], bucket: int, tokenizer: Path | None,
                targets: list[Target]) -> list[NpuArtifact]:
        batch = self.spec.shapes.batch
        run = self.runner.run

        def static_work(out: Path) -> dict[str, Any]:
            graphs.save(graphs.make_static(onnx.load(str(fp32.path)), batch, bucket), out / MODEL)
            return {}

        static, static_run = run("static-shapes", {"model": fp32.digest}, {"batch": batch, "sequence": bucket},
                                 static_work, bucket=bucket)

        def fixes_work(out: Path) -> dict[str, Any]:
            model = onnx.load(str(static.path(MODEL)))
            clamped = graphs.clamp_mask_constants(model)
            graphs.save(model, out / MODEL)
            return {"clamped_mask_constants": clamped}

        fixed, fixes_run = run("npu-fixes", {"model": static.digest}, {"mask_floor": graphs.MASK_FLOOR},
                               fixes_work, bucket=bucket)
        def preprocess_work(out: Path) -> dict[str, Any]:
            quantize.preprocess(fixed.path(MODEL), out / MODEL)
            return {}

        pre, pre_run = run("preprocess", {"model": fixed.digest}, {}, preprocess_work, bucket=bucket)
        static_specs = [graphs.InputSpec(s.name, s.dtype, _fixed_shape(s.shape, batch, bucket)) for s in specs]
        calibration_texts = self._calibration_texts()
        steps = [*fp32.steps, static_run, fixes_run, pre_run]
        compile_input, qdq = pre, None
        if self.spec.precision in quantize.QUANT_TYPES:
            feeds = self._feeds(static_specs, tokenizer, calibration_texts, self.spec.calibration.samples,
                                _CALIBRATION_SEED, "quantize")

            def quantize_work(out: Path) -> dict[str, Any]:
                quantize.quantize(pre.path(MODEL), out / MODEL, self.spec.precision, feeds)
                return {"precision": self.spec.precision.value, "calibration_samples": len(feeds) * batch}

            qdq, quantize_run = run("quantize", {"model": pre.digest, "calibration": inputs.feeds_digest(feeds)},
                                    {"precision": self.spec.precision.value, "per_channel": quantize.PER_CHANNEL}, quantize_work, bucket=bucket)
            compile_input = qdq
            steps.append(quantize_run)
        held_out = self._held_out(static_specs, tokenizer, calibration_texts)
        artifacts = []
        for target in targets:
            try:
                artifacts.append(self._target(target, bucket, compile_input, static, fixed, qdq, held_out, tuple(steps)))
            except NotBuiltError as exc:
                if not self.partial:
                    raise
                self.missing = self.missing or exc.step
        return artifacts

    def _target(self, target: Target, bucket: int, compile_input: Record, reference: Record, fixed: Record,
                qdq: Record | None, held_out: list[inputs.Feed], steps: tuple[StepRun, ...]) -> NpuArtifact:
        soc, arch, name = target.soc_model or 0, target.htp_arch, target.name
        precision = self.spec.precision
        fp16 = precision is Precision.FP16
        sdk = self.runner.tools["qnn-sdk"]
        facts = {"soc_model": soc, "htp_arch": arch, "precision": precision.value, "qnn_sdk": sdk}

        def compile_work(out: Path) -> dict[str, Any]:
            compiled = qnn_compile.compile_context(compile_input.path(MODEL), out, soc_model=soc, fp16=fp16,
                                                   optimization_level=self.spec.build.optimization_level)
            if qnn_compile.compat_soc(compiled.compatibility) != soc:
                raise BuildError("compile", f"asked for soc {soc}, the context binary says "
                                 f"{compiled.compatibility!r}")
            return facts | {"ep_compatibility_info": compiled.compatibility,
                            "npu_coverage": compiled.coverage.qnn_share, "coverage": compiled.coverage.as_dict()}

        if self.spec.build.strategy is Strategy.AIHUB:
            compiled, compile_run = self._aihub_compile(target, bucket, compile_input, facts)
        else:
            compiled, compile_run = self.runner.run(
                "compile", {"model": compile_input.digest},
                facts | {"fp16": fp16, "optimization_level": self.spec.build.optimization_level},
                compile_work, target=name, bucket=bucket)
        metric = self.spec.accuracy.metric or (Metric.COSINE if self.spec.model.task is Task.EMBEDDINGS
                                               else Metric.MAX_ABS_ERROR)
        threshold = self.spec.accuracy.threshold
        threshold = DEFAULT_THRESHOLDS[metric] if threshold is None else threshold
        pool = (pooling.pooling_config(self.model_dir, self.spec.model.pooling, self.spec.model.normalize)
                if self.spec.model.task is Task.EMBEDDINGS else None)

        def verify_work(out: Path) -> dict[str, Any]:
            measured = verify.measure(compiled.path(qnn_compile.CONTEXT_MODEL), reference.path(MODEL), held_out,
                                      soc_model=soc, fp16=fp16, metric=metric, pool=pool)
            if not measured.passes(threshold):
                relation = "below the required" if metric is Metric.COSINE else "above the allowed"
                raise AccuracyError(
                    f"{metric.value} {measured.value:.6f} on {name} ({precision.value}, bucket {bucket}) is "
                    f"{relation} {threshold} (spec.accuracy.threshold)",
                    metric=metric.value, value=measured.value, threshold=threshold)
            # An AI Hub compile reports no node assignment; the wrapper's own session (measured) then decides.
            coverage = min(measured.coverage.qnn_share, compiled.details.get("npu_coverage", 1.0))
            return facts | {
                "accuracy": {"metric": metric.value, "value": measured.value, "mean": measured.mean,
                             "threshold": threshold, "samples": measured.samples},
                "npu_coverage": coverage, "coverage": measured.coverage.as_dict(),
            }

        verify_params = {"metric": metric.value, "threshold": threshold, "soc_model": soc, "fp16": fp16,
                         "pooling": [pool.mode.value, pool.normalize] if pool else None}
        verified, verify_run = self.runner.run(
            "verify", {"context": compiled.digest, "reference": reference.digest,
                       "held_out": inputs.feeds_digest(held_out)},
            verify_params, verify_work, target=name, bucket=bucket)
        accuracy = verified.details["accuracy"]
        return NpuArtifact(
            target=name, soc_model=soc, htp_arch=arch, precision=precision, batch=self.spec.shapes.batch,
            bucket=bucket, context_model=compiled.path(qnn_compile.CONTEXT_MODEL),
            context_binary=compiled.path(qnn_compile.CONTEXT_BINARY),
            qdq_model=qdq.path(MODEL) if qdq else None, static_model=fixed.path(MODEL),
            accuracy=AccuracyResult(accuracy["metric"], accuracy["value"], accuracy["threshold"],
                                    accuracy["mean"], accuracy["samples"]),
            npu_coverage=verified.details["npu_coverage"], qnn_sdk=compiled.details.get("qnn_sdk_compiled") or sdk,
            files=compiled.files, steps=(*steps, compile_run, verify_run),
            origin="aihub" if compiled.step == "aihub-compile" else "local",
            compatibility=compiled.details.get("ep_compatibility_info"),
        )

    def _aihub_compile(self, target: Target, bucket: int, compile_input: Record,
                       facts: dict[str, Any]) -> tuple[Record, StepRun]:
        settings = self.spec.build.aihub
        device = settings.device or (target.soc.aihub_device if target.soc else None)
        if device is None:
            raise BuildError("compile", f"target {target.name} has no known AI Hub device: set "
                             "spec.build.aihub.device (a name from qai_hub.get_devices())")
        job = aihub.Job(device, aihub.compile_options(fp16=self.spec.precision is Precision.FP16,
                                                      qairt_version=settings.qairt_version, extra=settings.options),
                        settings.project, f"{self.deployment.name} {target.name} bucket {bucket}")
        key = step_key("aihub-compile", {"model": compile_input.digest}, facts | {"device": job.device,
                                                                                  "options": job.options},
                       self.runner.tools)

        def report(message: str) -> None:
            self.runner.progress(StepEvent("aihub-compile", StepState.RUNNING, key, target.name, bucket,
                                           message=message))

        def work(out: Path) -> dict[str, Any]:
            details = aihub.compile_on_aihub(compile_input.path(MODEL), out, job, credentials=self.aihub_credentials,
                                             report=report)
            said = qnn_compile.compat_soc(details["ep_compatibility_info"])
            if said not in (None, facts["soc_model"]):
                raise BuildError("compile", f"AI Hub compiled for {describe_soc(said)} on {job.device}, but target "
                                 f"{target.name} is {describe_soc(facts['soc_model'])}: set spec.build.aihub.device")
            return facts | details

        return self.runner.run("aihub-compile", {"model": compile_input.digest},
                               facts | {"device": job.device, "options": job.options}, work,
                               target=target.name, bucket=bucket)

    def _calibration_texts(self) -> list[str]:
        if self.spec.model.task is not Task.EMBEDDINGS:
            if self.spec.calibration.texts or self.spec.calibration.file:
                raise BuildError("quantize", "calibration texts need task: embeddings; tensor models are "
                                 "calibrated with seeded random inputs")
            return []
        return inputs.calibration_texts(self.spec.calibration, self.base_dir)

    def _feeds(self, specs: list[graphs.InputSpec], tokenizer: Path | None, texts: list[str], count: int,
               seed: int, step: str) -> list[inputs.Feed]:
        if self.spec.model.task is not Task.EMBEDDINGS:
            return inputs.random_feeds(specs, count, seed)
        if tokenizer is None:
            raise BuildError(step, f"no tokenizer.json in {self.model_dir}: an embeddings model needs one "
                             "(set spec.model.tokenizer)")
        return inputs.text_feeds(tokenizer, specs, texts)

    def _held_out(self, specs: list[graphs.InputSpec], tokenizer: Path | None,
                  calibration: list[str]) -> list[inputs.Feed]:
        samples = self.spec.accuracy.samples
        texts = inputs.held_out_texts(samples, calibration)
        if self.spec.model.task is Task.EMBEDDINGS and not texts:
            raise BuildError("verify", "every built-in held-out sentence is in the calibration set; "
                             "accuracy must be measured on inputs that were not calibrated on")
        return self._feeds(specs, tokenizer, texts, samples, _HELD_OUT_SEED, "verify")


def _pick_targets(deployment: ModelDeployment, names: Sequence[str] | None) -> list[Target]:
    declared = deployment.spec.targets
    if not names:
        return list(declared)
    known = {t.name: t for t in declared} | {f"soc{t.soc_model}": t for t in declared}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BuildError("resolve", f"{', '.join(unknown)}: not a target of {deployment.name} "
                         f"(its targets: {', '.join(t.name for t in declared)})")
    return list({id(known[n]): known[n] for n in names}.values())


def _inputs(model_path: Path) -> tuple[list[graphs.InputSpec], bool]:
    """The model's inputs, and whether it has a sequence axis (read once; the model is not kept)."""
    model = onnx.load(str(model_path), load_external_data=False)
    return graphs.inputs_of(model), graphs.has_sequence_axis(model)


def _fixed_shape(shape: tuple[int | str | None, ...], batch: int, sequence: int) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else batch if axis == 0 else sequence if axis == 1 else d
                 for axis, d in enumerate(shape))


def _dist_version(name: str) -> str | None:
    # Read from package metadata: importing torch only to learn its version costs seconds on cached builds.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
