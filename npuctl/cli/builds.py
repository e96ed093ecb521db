"""Commands on artifacts: build a manifest's steps (and publish them), inspect and clean the store."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from npuctl.cli.build_display import JsonLines, Lines, LiveTable
from npuctl.cli.output import console, err_console, human_size

if TYPE_CHECKING:
    from npuctl.artifacts import BuildResult, Store

CACHE_DIR = click.option("--cache", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Artifact store (default: $NPUCTL_CACHE or the user data folder).")


@click.command()
@click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Manifest file.")
@click.option("--target", "targets", multiple=True, help="Build only this target (alias or soc<N>; repeatable).")
@click.option("--all-targets", is_flag=True, help="Build every declared target (the default without --target).")
@click.option("--publish", "publish_to", default=None, metavar="FOLDER|oci://HOST[:PORT]/REPO",
              help="Then publish the build's steps for a fleet: to a folder (any static web server can serve it) or "
                   "to an OCI registry repository, each step tagged by its key (credentials: docker login). See README.")
@click.option("--plain-http", is_flag=True, help="Publish to an oci:// registry over plain http (a lab registry).")
@CACHE_DIR
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def build(path: Path, targets: Sequence[str], all_targets: bool, publish_to: str | None, plain_http: bool,
          root: Path | None, output: str) -> None:
    """Build a manifest's artifacts: export, static shapes, quantize, compile context binaries, verify.
    Steps already in the store are not run again."""
    from npuctl.artifacts import BuildError, Store, build_deployment
    from npuctl.schema import load_file

    if all_targets and targets:
        raise click.UsageError("--all-targets and --target exclude each other")
    if publish_to and publish_to.startswith("oci://"):
        from npuctl.artifacts.oci.refs import ReferenceError, parse

        try:
            parse(publish_to, allow_tag=False)
        except ReferenceError as exc:
            raise click.BadParameter(str(exc), param_hint="--publish") from exc
    loaded = load_file(path)
    for error in loaded.errors:
        click.echo(str(error), err=True)
    if not loaded.ok or not loaded.deployments:
        raise SystemExit(1)
    _quiet_native_logs()
    store = Store(root)
    results = []
    for deployment in loaded.deployments:
        try:
            if output == "json":
                # The QNN libraries print a banner on stdout; keep stdout for the JSON alone.
                with _StdoutToStderr() as stdout:
                    results.append(build_deployment(deployment, store=store, targets=targets or None,
                                                    progress=JsonLines(deployment.name, stdout).update,
                                                    publishing=publish_to is not None))
            else:
                with (LiveTable if err_console.is_terminal else Lines)(deployment.name) as show:
                    results.append(build_deployment(deployment, store=store, targets=targets or None,
                                                    progress=show.update, publishing=publish_to is not None))
        except BuildError as exc:
            # Placed as the loader places its errors: at the manifest field the failure is about, when there is one.
            place = f"{deployment.where(exc.field)}: {'.'.join(exc.field)}: " if exc.field else ""
            err_console.print(f"{escape(place)}[red]build of {deployment.name} failed[/red]: {escape(str(exc))}")
            raise SystemExit(1) from exc
    if publish_to is not None:
        _publish(results, store, publish_to, plain_http)
    if output == "json":
        # The last line, after the events' lines: what `-o json` printed alone before events were streamed.
        data = [r.as_dict() for r in results]
        click.echo(json.dumps(data[0] if len(data) == 1 else data))
        return
    for result in results:
        _print_result(result)


def _publish(results: list[BuildResult], store: Store, publish_to: str, plain_http: bool) -> None:
    if publish_to.startswith("oci://"):
        from npuctl.artifacts.oci.client import RegistryError
        from npuctl.artifacts.published import registry as steps

        try:
            pushed = steps.publish(results, store, publish_to, insecure=plain_http)
        except RegistryError as exc:
            err_console.print(f"[red]publishing to {escape(publish_to)} failed[/red]: {escape(str(exc))}")
            raise SystemExit(1) from exc
        count, written, size = len(pushed.digests), pushed.blobs_written, pushed.bytes_written
    else:
        from npuctl.artifacts.published.publish import publish

        done = publish(results, store, Path(publish_to))
        count, written, size = len(done.steps), done.blobs_written, done.bytes_written
    err_console.print(f"published {count} steps to {publish_to} ({written} new files, {human_size(size)})")


def _print_result(result: BuildResult) -> None:
    from npuctl.schema.placement import coverage_text

    for artifact in result.artifacts:
        acc = artifact.accuracy
        measured = f"{acc.metric} {acc.value:.4f} (bar {acc.threshold})" if acc else f"{artifact.origin}, not measured"
        console.print(f"{result.deployment} {artifact.target} (soc {artifact.soc_model}) bucket {artifact.bucket} "
                      f"{artifact.precision.value}: {measured}, "
                      f"NPU coverage {coverage_text(artifact.npu_coverage)}\n  {artifact.context_model}")
        generation = artifact.status().generation
        for line in generation.lines() if generation else []:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    if not result.artifacts:
        console.print(f"{result.deployment}: {result.precision.value} runs on the CPU: {result.cpu_model}")


def _quiet_native_logs() -> None:
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    # onnxruntime.quantization logs advice ("consider pre-processing") on the root logger as warnings.
    logging.getLogger().setLevel(logging.ERROR)


class _StdoutToStderr:
    """Point file descriptor 1 at stderr for a while (native libraries write to it directly); gives a
    descriptor of the real stdout."""

    def __enter__(self) -> int:
        import os

        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        return self._saved

    def __exit__(self, *exc: object) -> None:
        import os

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)


@click.group()
def cache() -> None:
    """Inspect and clean the artifact store."""


@cache.command("ls")
@CACHE_DIR
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def cache_ls(root: Path | None, output: str) -> None:
    """List stored steps (not re-hashed; `cache verify` does that)."""
    from npuctl.artifacts import Store
    from npuctl.artifacts.facts import Targeted

    store = Store(root)
    records = store.records()
    if output == "json":
        click.echo(json.dumps([r.for_storage() | {"folder": str(r.folder)} for r in records], indent=2))
        return
    table = Table("key", "step", "target", "precision", "size", "created", title=str(store.root), title_justify="left")
    for record in records:
        targeted = record.details if isinstance(record.details, Targeted) else None
        soc = targeted.soc_model if targeted else None
        precision = targeted.precision if targeted else None
        table.add_row(record.key[:12], record.step, f"soc {soc}" if soc else "",
                      str(precision or record.parameters.get("precision") or ""),
                      human_size(store.size(record)), record.created)
    console.print(table)


@cache.command("verify")
@CACHE_DIR
@click.option("--keep", is_flag=True, help="Report bad entries but do not remove them.")
def cache_verify(root: Path | None, keep: bool) -> None:
    """Re-hash every stored file; report and drop entries that don't match their records. Exit 1 if any."""
    from npuctl.artifacts import Store

    store = Store(root)
    problems = store.verify(drop=not keep)
    for problem in problems:
        action = "kept" if keep else "removed"
        click.echo(f"{problem.key[:12]} {problem.step or '?'}: {problem.message} ({action})")
    click.echo(f"{len(store.records())} entries ok, {len(problems)} bad")
    raise SystemExit(1 if problems else 0)


@cache.command("gc")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@CACHE_DIR
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
def cache_gc(manifests: Sequence[Path], root: Path | None, dry_run: bool) -> None:
    """Remove stored steps that no manifest in MANIFESTS (files or folders) uses, and dead builders' work folders."""
    from npuctl.artifacts import BuildError, Store
    from npuctl.artifacts.gc import collect
    from npuctl.schema import load_paths

    result = load_paths(manifests)
    if not result.ok:
        for error in result.errors:
            click.echo(str(error), err=True)
        click.echo("not collecting: fix the manifests first (their artifacts would look unused)", err=True)
        raise SystemExit(1)
    try:
        done = collect(Store(root), result.deployments, dry_run=dry_run)
    except BuildError as exc:
        click.echo(f"not collecting: {exc}", err=True)
        raise SystemExit(1) from exc
    for record in done.removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {record.key[:12]} {record.step}")
    click.echo(f"{'would free' if dry_run else 'freed'} {human_size(done.freed_bytes)}; "
               f"kept {len(done.kept)} referenced step(s)")
