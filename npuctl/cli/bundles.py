"""`npuctl bundle`: signed manifest bundles for fleets (agents follow them through `sources:`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from npuctl.cli.output import err_console


@click.group()
def bundle() -> None:
    """Signed manifest bundles for fleets: keygen, pack, sign, verify (agents follow them via `sources:`)."""


@bundle.command("keygen")
@click.argument("private_key", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cosign", is_flag=True, help="An ECDSA P-256 key for cosign-compatible signatures instead: writes "
              "PRIVATE_KEY (PKCS#8 PEM) and PRIVATE_KEY.pub (what `cosign verify --key` and agents' cosignPublicKey take).")
def bundle_keygen(private_key: Path, cosign: bool) -> None:
    """Write a new ed25519 private key (PEM, owner-only) and print its public key for agent configs."""
    from npuctl.agent import bundles

    try:
        if cosign:
            public = bundles.write_cosign_key(private_key)
            click.echo(f"{public} written:\n{public.read_text(encoding='utf-8')}", nl=False)
            return
        click.echo(bundles.write_private_key(private_key))
    except bundles.BundleError as exc:
        raise click.UsageError(str(exc)) from exc


@bundle.command("push")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", metavar="oci://HOST[:PORT]/REPO:TAG")
@click.option("--key", "key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The ed25519 private key agents' publicKey matches (npuctl bundle keygen).")
@click.option("--steps", "steps", required=True, metavar="oci://HOST[:PORT]/REPO",
              help="The step repository the manifests were published to (npuctl build --publish): every step is pinned "
                   "by its manifest digest there.")
@click.option("--version", "version", default=None, help="The bundle's version (default: its UTC creation time).")
@click.option("--expires-in", "expires_days", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Days until agents report the bundle expired.")
@click.option("--cosign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also push a cosign signature (.sig tag) with this ECDSA P-256 key (npuctl bundle keygen --cosign).")
@click.option("--plain-http", is_flag=True, help="The registry speaks plain http (a lab registry).")
@click.option("--cache", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The store the steps were built in (default: $NPUCTL_CACHE or the user data folder).")
def bundle_push(folder: Path, target: str, key: Path, steps: str, version: str | None, expires_days: float,
                cosign_key: Path | None, plain_http: bool, root: Path | None) -> None:
    """Push the manifests in FOLDER as a signed bundle to an OCI registry tag that agents follow (sources: url:
    oci://...). Credentials: docker login / credential helpers."""
    from datetime import timedelta

    from npuctl.agent import bundle_push, bundles
    from npuctl.artifacts.oci.client import RegistryError
    from npuctl.artifacts.oci.cosign import SignatureError
    from npuctl.artifacts.oci.refs import ReferenceError
    from npuctl.artifacts.store import Store

    try:
        pushed = bundle_push.push(folder, target, key, steps, version=version, expires_in=timedelta(days=expires_days),
                                  cosign_key=cosign_key, insecure=plain_http, store=Store(root))
    except ReferenceError as exc:
        raise click.BadParameter(str(exc)) from exc
    except (bundles.BundleError, SignatureError, RegistryError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    signed = f", cosign signature {pushed.cosign_signature}" if pushed.cosign_signature else ""
    click.echo(f"{pushed.reference}: version {pushed.version}, {pushed.manifests} manifest(s), "
               f"{pushed.pins} step(s) pinned{signed}")


@bundle.command("pack")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="The bundle's version (shown in agents' source status).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also sign with this private key (writes OUT.sig).")
@click.option("--expires-in", "expires_days", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Days until agents refuse the bundle as expired (it is dated now: agents "
              "refuse bundles older than the one they run).")
def bundle_pack(folder: Path, version: str, out: Path, key: Path | None, expires_days: float) -> None:
    """Pack the manifests in FOLDER into a bundle dated now (every manifest must be valid)."""
    from datetime import UTC, datetime, timedelta

    from npuctl.agent import bundles

    try:
        packed = bundles.pack(folder, version, datetime.now(UTC), timedelta(days=expires_days))
    except bundles.BundleError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    data = packed.as_bytes()
    out.write_bytes(data)
    if key:
        _sign(out, data, key)
    expires = bundles.timestamp(packed.expires) if packed.expires else "never"
    click.echo(f"{out}: {len(packed.manifests)} manifest(s), version {version}, expires {expires}"
               f"{', signed' if key else ''}")


@bundle.command("sign")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def bundle_sign(bundle_file: Path, key: Path) -> None:
    """Write BUNDLE.sig: the ed25519 signature over the bundle's bytes."""
    click.echo(f"{_sign(bundle_file, bundle_file.read_bytes(), key)} written")


@bundle.command("verify")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", required=True, help="base64 ed25519 public key (as in agent configs).")
def bundle_verify(bundle_file: Path, public_key: str) -> None:
    """Check a bundle and its .sig as an agent would: exit 0 if it verifies and is valid, 1 if not."""
    from npuctl.agent import bundles

    data = bundle_file.read_bytes()
    signature = Path(bundles.signature_location(str(bundle_file)))
    try:
        bundles.verify(data, signature.read_text(encoding="utf-8") if signature.exists() else "", public_key)
        packed = bundles.parse(data)
    except bundles.BundleError as exc:
        err_console.print(f"[red]refused:[/red] {escape(f'{bundle_file}: {exc}')}")
        sys.exit(1)
    click.echo(f"{bundle_file}: verified, version {packed.version}, {len(packed.manifests)} manifest(s)")


def _sign(bundle_file: Path, data: bytes, key: Path) -> Path:
    from npuctl.agent import bundles

    try:
        return bundles.write_signature(bundle_file, data, key)
    except bundles.BundleError as exc:
        raise click.UsageError(str(exc)) from exc
