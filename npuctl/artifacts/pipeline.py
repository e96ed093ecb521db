"""The build graph of one deployment: content-addressed steps from the source to verified context binaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from npuctl.artifacts import aihub, facts, graphs, inputs, measure, quantize
from npuctl.artifacts import compile as qnn_compile
from npuctl.artifacts.encoder import export, verify
from npuctl.artifacts.errors import BuildError, NotBuiltError
from npuctl.artifacts.graphs import MODEL_FILE
from npuctl.artifacts.llm import choose as generation
from npuctl.artifacts.published import fetch, location
from npuctl.artifacts.result import BuildResult, NpuArtifact, ProgressCallback, StepRun, Survey
from npuctl.artifacts.seq2seq import export as seq2seq
from npuctl.artifacts.seq2seq import steps as decoder_steps
from npuctl.artifacts.sources import packs
from npuctl.artifacts.sources.context import ResolvedSource, buildable
from npuctl.artifacts.sources.declared import DeclaredSources
from npuctl.artifacts.steps import Runner, dist_version
from npuctl.artifacts.store import Record, Store
from npuctl.artifacts.targets import targets_of
from npuctl.runtime import pooling, scoring
from npuctl.schema.loader import LoadedDeployment, Loc
from npuctl.schema.models import Format, ModelDeployment, Precision, Strategy, Target, Task

SCORING_TASKS = (Task.RERANK, Task.CLASSIFICATION)


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
    published: Sequence[str | location.StoreLocation] = (),
    pins: dict[str, str] | None = None,
    publishing: bool = False,
    source_roots: Sequence[Path] | None = None,
) -> BuildResult:
    """Build (or find in the store) everything `deployment` needs. Every step whose key is stored is skipped,
    so a fully built deployment returns after re-hashing its files and running nothing.

    base_dir: the folder `file:` sources and calibration files are relative to (default: the manifest's
    folder for a LoadedDeployment, else the current directory). targets: aliases (or soc<N>) to limit the
    build to. cached_only: run no step; raise NotBuiltError if one is missing (adopting a store on restart).
    for_soc: the SoC of the device that will load the result (an agent's): only its targets are built, and
    when none is declared for it but the model can be compiled, it is compiled for that SoC instead.
    aihub_credentials: for `build.strategy: aihub` (default: qai-hub's own INI file).
    published: artifact stores (folders or http(s) URLs, npuctl.artifacts.published.publish layout) asked for each missing
    step before it runs, in order; a step fetched from one is not run (with `cached_only` too). pins: step key ->
    manifest digest (from signed bundles): an oci: store is asked for a pinned step by that digest only.
    publishing: the build is for `--publish`: `build.strategy: prebuilt` compiles here (the publisher is where
    the binaries come from). Elsewhere prebuilt compiles nothing: a pack's binaries, or published steps only.
    source_roots: the folders `file:` sources must lead into (None: anywhere; empty: no `file:` source).
    Raises BuildError (AccuracyError when verify measures below the bar)."""
    where: Callable[[Loc], str] | None = None
    if isinstance(deployment, LoadedDeployment):
        base_dir = base_dir or deployment.file.parent
        where = deployment.where
        deployment = deployment.deployment
    fetch_only = deployment.spec.build.strategy is Strategy.PREBUILT and not publishing and bool(published)
    runner = Runner(store or Store(), progress or (lambda event: None), cached_only or fetch_only,
                    [fetch.open_source(where, pins) for where in published])
    build = _Build(deployment, Path(base_dir or Path.cwd()), runner, for_soc=for_soc,
                   aihub_credentials=aihub_credentials, compile_prebuilt=publishing or fetch_only,
                   roots=None if source_roots is None else tuple(source_roots), where=where)
    try:
        return build.run(targets_of(deployment, targets))
    finally:
        for source in runner.published:
            source.close()


def survey(deployment: LoadedDeployment, *, store: Store, base_dir: Path | None = None,
           source_roots: Sequence[Path] | None = None) -> Survey:
    """What is stored and what a build would run next (for dry runs and garbage collection). Runs nothing."""
    runner = Runner(store, lambda event: None, cached_only=True)
    # compile_prebuilt: a publisher's store holds what it compiled for `prebuilt` deployments.
    build = _Build(deployment.deployment, base_dir or deployment.file.parent, runner, partial=True,
                   compile_prebuilt=True, roots=None if source_roots is None else tuple(source_roots),
                   where=deployment.where)
    try:
        build.run(list(deployment.deployment.spec.targets))
    except NotBuiltError as exc:
        return Survey(tuple(runner.runs.values()), exc.step)
    return Survey(tuple(runner.runs.values()), build.missing)


def referenced_keys(deployment: LoadedDeployment, *, store: Store) -> set[str]:
    """Keys of the stored steps a deployment uses, as far as it is built (for garbage collection)."""
    return {run.key for run in survey(deployment, store=store).stored}


@dataclass(frozen=True)
class _Fp32:
    """The dynamic fp32 model every NPU graph is derived from."""

    path: Path
    digest: str
    model_dir: Path
    steps: tuple[StepRun, ...]


class _Build:
    def __init__(self, deployment: ModelDeployment, base_dir: Path, runner: Runner, partial: bool = False,
                 for_soc: int | None = None, aihub_credentials: aihub.Credentials | None = None,
                 compile_prebuilt: bool = False, roots: tuple[Path, ...] | None = None,
                 where: Callable[[Loc], str] | None = None) -> None:
        self.deployment = deployment
        self.sources = DeclaredSources(deployment.spec, base_dir, runner, roots, where)
        self.compile_prebuilt = compile_prebuilt
        """Take the compile path under `prebuilt` (publishing, or fetching what a publisher compiled)."""
        self.partial = partial
        """Skip (target, bucket) branches whose steps are missing instead of failing: to list what is built."""
        self.missing: str | None = None
        """With `partial`: the first step found missing (the rest of its bucket depends on it)."""
        self.spec = deployment.spec
        self.base_dir = base_dir
        self.runner = runner
        self.for_soc = for_soc
        self.aihub_credentials = aihub_credentials
        self.model_dir: Path | None = None
        self.export: Record[facts.Seq2SeqExport] | None = None
        """The export step's record (an encoder-decoder's decoder is in it)."""

    def run(self, targets: list[Target]) -> BuildResult:
        if self.spec.model.task is Task.TEXT_GENERATION:
            source, resolve_run = self.sources.model()
            return generation.build(self.deployment, source, resolve_run, self.runner,
                                    self._for_device(targets, True), self.base_dir)
        model, pack, resolve_runs = self.sources.model_and_pack()
        strategy = self.spec.build.strategy
        entries = packs.scan(pack.path) if pack and strategy in (Strategy.AUTO, Strategy.PREBUILT) else []
        compilable = (model is not None and buildable(model)
                      and (strategy is not Strategy.PREBUILT or self.compile_prebuilt))
        targets = self._for_device(targets, compilable)
        from_pack = {t.name: packs.for_soc(entries, t.soc_model or 0, pack.uri) for t in targets} if pack else {}
        to_compile = [t for t in targets if not from_pack.get(t.name)]
        if to_compile and not compilable and self.spec.precision is not Precision.FP32:
            raise BuildError("prebuilt", packs.why_not_compiled(to_compile, model, pack, entries))
        fp32 = self._fp32(model, resolve_runs[0]) if model is not None and buildable(model) else None
        self.model_dir = fp32.model_dir if fp32 else pack.folder if pack else None
        tokenizer = self._tokenizer(self.model_dir)
        artifacts: list[NpuArtifact] = []
        for target in targets:
            for entry in from_pack.get(target.name, []):
                artifacts.append(self._import(target, entry, pack, resolve_runs))  # type: ignore[arg-type]
        if fp32 is not None and to_compile and self.spec.precision is not Precision.FP32:
            specs, sequence_axis = graphs.read_inputs(fp32.path)
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

    def _for_device(self, targets: list[Target], compilable: bool) -> list[Target]:
        if self.for_soc is None:
            return targets
        mine = [t for t in targets if t.soc_model == self.for_soc]
        if mine or not compilable:
            # With nothing to compile from, the declared targets are fetched as they are; loading them on this
            # device then fails with the reason (built for another SoC) instead of the build failing here.
            return mine or targets
        return [Target.model_validate({"socModel": self.for_soc})]

    def _import(self, target: Target, entry: packs.PackEntry, pack: ResolvedSource,
                resolve_runs: tuple[StepRun, ...]) -> NpuArtifact:
        relative = entry.path.relative_to(pack.folder).as_posix()

        def work(out: Path) -> facts.ImportPack:
            return packs.import_entry(entry, out)

        record, run = self.runner.run(facts.ImportPack, {"pack": pack.digest}, {"graph": relative},
                                      work, target=target.name, bucket=entry.bucket)
        return NpuArtifact(
            target=target.name, built=record.details, precision=self.spec.precision, batch=self.spec.shapes.batch,
            bucket=entry.bucket, context_model=record.path(packs.WRAPPER_FILE),
            context_binary=record.path(record.details.context_binary), accuracy=None,
            # An EPContext wrapper is one node, and it runs on the QNN EP or not at all.
            npu_coverage=1.0, files=record.files, steps=(*resolve_runs, run))

    def _fp32(self, source: ResolvedSource, resolve_run: StepRun) -> _Fp32:
        if source.format is Format.ONNX:
            return _Fp32(source.path, source.digest, source.folder, (resolve_run,))
        parameters = {"opset": export.OPSET, "torch": dist_version("torch"),
                      "transformers": dist_version("transformers")}
        head = self.spec.model.task in SCORING_TASKS
        if head:  # embeddings keep their keys: the parameter is only there for heads
            parameters["head"] = "sequence-classification"
        if self.spec.model.task is Task.TEXT2TEXT_GENERATION:
            parameters["max_output_tokens"] = self.spec.shapes.max_output_tokens

        record: Record[facts.Facts]
        if self.spec.model.task is Task.TEXT2TEXT_GENERATION:
            tokens = self.spec.shapes.max_output_tokens
            self.export, run = self.runner.run(facts.Seq2SeqExport, {"source": source.digest}, parameters,
                                               lambda out: seq2seq.export_seq2seq(source.path, out, tokens))
            record = self.export
        else:
            def work(out: Path) -> facts.Export:
                if self.spec.model.task is Task.CLASSIFICATION:
                    _labels(source.folder)  # before loading: transformers would give a head without labels 2 random ones
                return facts.Export(input_names=export.export_transformers(source.path, out, head=head))

            record, run = self.runner.run(facts.Export, {"source": source.digest}, parameters, work)
        return _Fp32(record.path(MODEL_FILE), record.digest, record.folder, (resolve_run, run))

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

        def static_work(out: Path) -> facts.StaticShapes:
            graphs.save(graphs.make_static(onnx.load(str(fp32.path)), batch, bucket), out / MODEL_FILE)
            return facts.StaticShapes()

        static, static_run = run(facts.StaticShapes, {"model": fp32.digest}, {"batch": batch, "sequence": bucket},
                                 static_work, bucket=bucket)

        fold = self.spec.model.task is Task.TEXT2TEXT_GENERATION  # T5's position buckets: Log and integer math

        def fixes_work(out: Path) -> facts.NpuFixes:
            model = graphs.folded(static.path(MODEL_FILE)) if fold else onnx.load(str(static.path(MODEL_FILE)))
            clamped = graphs.clamp_mask_constants(model)
            graphs.save(model, out / MODEL_FILE)
            return facts.NpuFixes(clamped_mask_constants=clamped)

        fixes = {"mask_floor": graphs.MASK_FLOOR} | ({"fold_constants": True} if fold else {})
        fixed, fixes_run = run(facts.NpuFixes, {"model": static.digest}, fixes, fixes_work, bucket=bucket)
        def preprocess_work(out: Path) -> facts.Preprocess:
            quantize.preprocess(fixed.path(MODEL_FILE), out / MODEL_FILE)
            return facts.Preprocess()

        pre, pre_run = run(facts.Preprocess, {"model": fixed.digest}, {}, preprocess_work, bucket=bucket)
        static_specs = [graphs.InputSpec(s.name, s.dtype, graphs.fixed_shape(s.shape, batch, bucket)) for s in specs]
        calibration_texts = inputs.calibration_texts_for(self.spec, self.base_dir)
        steps = [*fp32.steps, static_run, fixes_run, pre_run]
        decoder = None
        if self.spec.model.task is Task.TEXT2TEXT_GENERATION and self.export is not None:
            decoder, decoder_run = decoder_steps.static_decoder(self.runner, self.export, bucket)
            steps.append(decoder_run)
        compile_input: Record[facts.Facts] = pre
        if self.spec.precision in quantize.QUANT_TYPES:
            feeds = inputs.calibration_feeds(self.spec, static_specs, tokenizer, calibration_texts)

            def quantize_work(out: Path) -> facts.Quantize:
                quantize.quantize(pre.path(MODEL_FILE), out / MODEL_FILE, self.spec.precision, feeds)
                return facts.Quantize(precision=self.spec.precision, calibration_samples=len(feeds) * batch)

            qdq, quantize_run = run(facts.Quantize, {"model": pre.digest, "calibration": inputs.feeds_digest(feeds)},
                                    {"precision": self.spec.precision.value, "per_channel": quantize.PER_CHANNEL}, quantize_work, bucket=bucket)
            compile_input = qdq
            steps.append(quantize_run)
        held_out = inputs.held_out_feeds(self.spec, static_specs, tokenizer, calibration_texts)
        artifacts = []
        for target in targets:
            try:
                artifacts.append(self._target(target, bucket, compile_input, static, held_out, tuple(steps), decoder))
            except NotBuiltError as exc:
                if not self.partial:
                    raise
                self.missing = self.missing or exc.step
        return artifacts

    def _target(self, target: Target, bucket: int, compile_input: Record[facts.Facts], reference: Record[facts.Facts],
                held_out: list[inputs.Feed], steps: tuple[StepRun, ...],
                decoder: Record[facts.DecoderStatic] | None) -> NpuArtifact:
        soc, name = target.soc_model or 0, target.name
        precision = self.spec.precision
        fp16 = precision is Precision.FP16
        on = facts.Targeted(soc_model=soc, htp_arch=target.htp_arch, precision=precision,
                            qnn_sdk=self.runner.tools["qnn-sdk"])
        level = self.spec.build.optimization_level

        def compile_work(out: Path) -> facts.Compile:
            compiled = qnn_compile.compile_context(compile_input.path(MODEL_FILE), out, soc_model=soc, fp16=fp16,
                                                   optimization_level=level)
            if qnn_compile.compat_soc(compiled.compatibility) != soc:
                raise BuildError("compile", f"asked for soc {soc}, the context binary says "
                                 f"{compiled.compatibility!r}")
            return facts.Compile(**on.model_dump(), ep_compatibility_info=compiled.compatibility,
                                 npu_coverage=compiled.coverage.qnn_share, coverage=facts.Coverage.of(compiled.coverage))

        compiled: Record[facts.Compile | facts.AihubCompile]
        if self.spec.build.strategy is Strategy.AIHUB:
            compiled, compile_run = aihub.compile_step(self.runner, self.deployment, target, bucket, compile_input, on,
                                                       self.aihub_credentials)
        else:
            compiled, compile_run = self.runner.run(
                facts.Compile, {"model": compile_input.digest},
                on.model_dump(mode="json") | {"fp16": fp16, "optimization_level": level},
                compile_work, target=name, bucket=bucket)
        task = self.spec.model.task
        compiled_decoder = None
        if decoder is not None:
            compiled_decoder, decoder_run = decoder_steps.compile_decoder(self.runner, decoder, on, name, bucket, level)
            steps = (*steps, decoder_run)
        metric, threshold = verify.bar(self.spec)
        pool = (pooling.pooling_config(self.model_dir, self.spec.model.pooling, self.spec.model.normalize)
                if task is Task.EMBEDDINGS else None)
        head = _labels(self.model_dir) if task is Task.CLASSIFICATION else None

        def verify_work(out: Path) -> facts.Verify:
            measured = measure.measure(self.spec, compiled.path(qnn_compile.CONTEXT_MODEL), reference.path(MODEL_FILE),
                                       held_out, self.model_dir, soc_model=soc, fp16=fp16, pool=pool, head=head,
                                       decoder=decoder_steps.decoder_context(compiled_decoder))
            verify.check(measured, threshold, self.spec.accuracy.min_agreement, f"{name} ({precision.value}, bucket {bucket})")
            shares = [measured.coverage.qnn_share]
            # An AI Hub compile reports no node assignment; the wrapper's own session (measured) then decides.
            if isinstance(compiled.details, facts.Compile):
                shares.append(compiled.details.npu_coverage)
            accuracy = facts.Accuracy(metric=metric.value, value=measured.value, mean=measured.mean, threshold=threshold,
                                      samples=measured.samples, agreement=measured.agreement)
            return facts.Verify(**on.model_dump(), accuracy=accuracy, npu_coverage=min(shares),
                                coverage=facts.Coverage.of(measured.coverage))

        verify_params = {"metric": metric.value, "threshold": threshold, "soc_model": soc, "fp16": fp16,
                         "pooling": [pool.mode.value, pool.normalize] if pool else None}
        if task in SCORING_TASKS:
            verify_params["min_agreement"] = self.spec.accuracy.min_agreement
        verified, verify_run = self.runner.run(
            facts.Verify, {"context": compiled.digest, "reference": reference.digest,
                           "held_out": inputs.feeds_digest(held_out)}
            | ({"decoder": compiled_decoder.digest} if compiled_decoder else {}),
            verify_params, verify_work, target=name, bucket=bucket)
        return NpuArtifact(
            target=name, built=compiled.details, precision=precision, batch=self.spec.shapes.batch, bucket=bucket,
            context_model=compiled.path(qnn_compile.CONTEXT_MODEL), context_binary=compiled.path(qnn_compile.CONTEXT_BINARY),
            accuracy=verified.details.accuracy, npu_coverage=verified.details.npu_coverage, files=compiled.files,
            steps=(*steps, compile_run, verify_run), decoder=decoder_steps.decoder_context(compiled_decoder),
            decoder_refused=compiled_decoder.details.refused if compiled_decoder else None,
        )


def _labels(model_dir: Path | None) -> scoring.Head:
    try:
        return scoring.read_head(model_dir, need_labels=True)
    except scoring.HeadError as exc:
        raise BuildError("export", str(exc)) from exc
