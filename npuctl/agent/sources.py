"""Pull-based manifest sources: each agent polls a signed bundle URL and writes what verifies into its
watched folder, where the reconcile loop takes it like any edit. Polls carry If-None-Match and a
jittered interval, so a fleet's agents neither download unchanged bundles nor arrive in the same second.
An unreachable source or a bundle that fails verification leaves the last good bundle in place. oci://
sources are polled through npuctl.agent.registry_sources. Each poll has a deadline (`pollTimeoutSeconds`): one
that does not finish in time (a server sending a byte a second) is abandoned and the source shows `Stalled`.
Before a bundle is applied: it must not be expired, nor older than the bundle in effect, nor undated once a
dated one was applied (unless the source allows rollback), and its step pins must be what the artifact
registries serve."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from npuctl.agent import bundles
from npuctl.agent.bundle_fetch import MAX_SIGNATURE_BYTES, FetchError, FetchRefused, fetch
from npuctl.agent.config import ManifestSource
from npuctl.agent.files import atomic_write
from npuctl.agent.registry_sources import RegistryFollower, check_pins
from npuctl.agent.source_rules import BUNDLE_SUFFIX
from npuctl.agent.status import now
from npuctl.artifacts.oci.client import DeadlineExceeded, RegistryError
from npuctl.artifacts.published.location import StoreLocation

log = logging.getLogger("npuctl.agent")

POLL_GRACE_SECONDS = 5.0
"""How long past its own deadline a poll may run before it is abandoned (its deadline normally ends it)."""


@dataclass
class SourceState:
    name: str
    url: str
    state: str = "Pending"
    """Pending, Synced, Unreachable, Stalled (the last poll passed its deadline) or Rejected."""
    message: str = ""
    version: str | None = None
    """Version of the bundle in effect (the last good one)."""
    last_poll: str | None = None
    last_change: str | None = None
    polls: int = 0
    etag: str | None = None
    verdict: tuple[str, str] | None = None
    """State and message given to the bundle behind `etag`: what an unchanged answer (304) restores after an
    Unreachable or Stalled poll."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("etag", "verdict")}

    def unchanged(self) -> None:
        if self.verdict is not None:
            self.state, self.message = self.verdict

    def keeping(self, state: str, why: str) -> None:
        """A poll that brought no new bundle: `state` and why, the bundle in effect kept."""
        self.state, self.message = state, f"{why}; keeping bundle {self.version}"


@dataclass(frozen=True)
class Applied:
    """The bundle in effect for a source, kept in the state folder so a restart cannot be rolled back."""

    version: str
    created: str | None
    expires: str | None
    steps: dict[str, str]
    digest: str | None
    """oci:// sources: the bundle manifest's digest (the ETag of the next poll)."""

    @classmethod
    def of(cls, bundle: bundles.Bundle, digest: str | None) -> Applied:
        return cls(bundle.version, bundle.created.isoformat() if bundle.created else None,
                   bundle.expires.isoformat() if bundle.expires else None, dict(bundle.steps), digest)


class SourcePoller:
    def __init__(self, sources: list[ManifestSource], folder: Path, wake: Callable[[], None],
                 rng: random.Random | None = None, state: Path | None = None,
                 registries: list[StoreLocation] | None = None) -> None:
        self.sources = sources
        self.folder = folder
        self.wake = wake
        self.rng = rng or random.Random()
        self.states = {s.name: SourceState(s.name, s.url) for s in sources}
        self.registries = registries or []
        self._records = state / "sources" if state else None
        self.applied = {s.name: found for s in sources if (found := self._load(s.name))}
        for name, applied in self.applied.items():
            self.states[name].version = applied.version

    def file_of(self, source: ManifestSource) -> Path:
        return self.folder / f"{source.name}{BUNDLE_SUFFIX}"

    def pins(self) -> dict[str, str]:
        """Step key -> manifest digest, from every bundle in effect."""
        return {key: digest for applied in self.applied.values() for key, digest in applied.steps.items()}

    async def run(self, stop: asyncio.Event) -> None:
        followers = {s.name: RegistryFollower(s) for s in self.sources if s.oci}
        try:
            async with httpx.AsyncClient(timeout=30) as client:  # redirects: bundle_fetch follows them
                await asyncio.gather(*(self._follow(client, source, followers.get(source.name), stop)
                                       for source in self.sources))
        finally:
            for follower in followers.values():
                follower.close()

    async def _follow(self, client: httpx.AsyncClient, source: ManifestSource, follower: RegistryFollower | None,
                      stop: asyncio.Event) -> None:
        # The first poll too is spread out: a fleet rebooting together must not arrive together.
        delay = self.rng.uniform(0, min(source.interval_seconds, 10.0))
        while not await _stopped(stop, delay):
            await self._poll_once(client, source, follower)
            delay = source.interval_seconds * self.rng.uniform(0.8, 1.2)

    async def _poll_once(self, client: httpx.AsyncClient, source: ManifestSource,
                         follower: RegistryFollower | None) -> None:
        """One poll in a task of its own, so that however it ends is that poll's outcome and the next poll still
        comes: an error nobody foresaw, a cancellation that escaped its deadline (on Python 3.11 asyncio.timeout's
        cancel can leak out of anyio's shielded connection cleanup as a bare CancelledError, the likeliest way a
        fleet agent's poller ended in CI while its bundle server stopped), or a poll still running past its
        deadline."""
        task = asyncio.ensure_future(self.poll(client, source) if follower is None
                                     else asyncio.to_thread(self.poll_registry, follower))
        try:
            done, _ = await asyncio.wait({task}, timeout=source.poll_timeout_seconds + POLL_GRACE_SECONDS)
        except asyncio.CancelledError:
            task.cancel()
            raise
        state = self.states[source.name]
        if not done:
            task.cancel()
            task.add_done_callback(_abandoned)
            self._stalled(source, state)
        elif task.cancelled():
            state.keeping("Unreachable", "the poll was cancelled before it finished; retried at the next poll")
            log.warning("%s: %s", source.name, state.message)
        elif isinstance(exc := task.exception(), OSError):  # the bundle could not be written (a full disk)
            state.message = f"cannot write the bundle: {exc.strerror or exc}; retried at the next poll"
            log.warning("%s: %s", source.name, state.message)
        elif exc is not None:
            state.keeping("Unreachable", f"the poll failed ({type(exc).__name__}: {exc}); retried at the next poll")
            log.error("%s: %s", source.name, state.message, exc_info=exc)

    async def poll(self, client: httpx.AsyncClient, source: ManifestSource) -> None:
        """One poll of an http(s) source, the bundle and its signature within the source's deadline."""
        state = self._polled(source)
        await self._poll_http(client, source, state)
        self._check_expiry(source, state)

    async def _poll_http(self, client: httpx.AsyncClient, source: ManifestSource, state: SourceState) -> None:
        headers = {"If-None-Match": state.etag} if state.etag else {}
        try:
            async with asyncio.timeout(source.poll_timeout_seconds):
                response = await fetch(client, source.url, bundles.MAX_BUNDLE_BYTES, source.redirect_hosts, headers)
                if response.status == 304:
                    state.unchanged()
                    return
                signature = await fetch(client, bundles.signature_location(source.url), MAX_SIGNATURE_BYTES,
                                        source.redirect_hosts)
        except TimeoutError:
            self._stalled(source, state)
            return
        except FetchRefused as exc:
            state.keeping("Rejected", str(exc))
            return
        except FetchError as exc:
            state.keeping("Unreachable", str(exc))
            return
        self._accept(source, state, response.body, signature.body.decode("ascii", "replace"), None)
        if state.state != "Unreachable":  # pins that could not be checked: fetch the bundle again next time
            state.etag, state.verdict = response.etag, (state.state, state.message)

    def poll_registry(self, follower: RegistryFollower) -> None:
        """One poll of an oci:// source (blocking: run in a thread)."""
        state = self._polled(follower.source)
        self._poll_registry(follower, state)
        self._check_expiry(follower.source, state)

    def _poll_registry(self, follower: RegistryFollower, state: SourceState) -> None:
        source = follower.source
        applied = self.applied.get(source.name)
        try:
            pulled = follower.poll(state.etag or (applied.digest if applied else None),
                                   time.monotonic() + source.poll_timeout_seconds)
            if pulled is None:
                if state.verdict is None and applied is not None:  # restarted on a tag that has not moved
                    state.verdict = ("Synced", f"tag unchanged since bundle {applied.version}")
                state.unchanged()
                return
        except DeadlineExceeded:
            self._stalled(source, state)
            return
        except RegistryError as exc:
            state.keeping("Unreachable", str(exc))
            return
        except ValueError as exc:  # not a bundle, or its cosign signature does not verify
            state.keeping("Rejected", str(exc))
            return
        self._accept(source, state, pulled.data, pulled.signature, pulled.digest)
        if state.state != "Unreachable":
            state.etag, state.verdict = pulled.digest, (state.state, state.message)

    def _stalled(self, source: ManifestSource, state: SourceState) -> None:
        state.keeping("Stalled", f"the poll did not finish within {source.poll_timeout_seconds:g} s "
                      "(pollTimeoutSeconds): the server sends too slowly or not at all")
        log.warning("%s: %s", source.name, state.message)

    def _polled(self, source: ManifestSource) -> SourceState:
        state = self.states[source.name]
        state.polls += 1
        state.last_poll = now()
        return state

    def _accept(self, source: ManifestSource, state: SourceState, data: bytes, signature: str,
                digest: str | None) -> None:
        try:
            bundles.verify(data, signature, source.public_key)
            bundle = bundles.parse(data)
            self._check_order(source, bundle)
            check_pins(bundle.steps, self.registries)
        except bundles.BundleError as exc:
            state.keeping("Rejected", str(exc))
        except RegistryError as exc:
            state.keeping("Unreachable", f"checking the bundle's step pins: {exc}")
        else:
            self._apply(source, bundle, state, digest)

    def _check_order(self, source: ManifestSource, bundle: bundles.Bundle) -> None:
        if bundle.expires and bundle.expires < datetime.now(UTC):
            raise bundles.BundleError(f"bundle {bundle.version} expired at {bundle.expires.isoformat()}")
        applied = self.applied.get(source.name)
        if applied and applied.created and not bundle.created and not source.allow_rollback:
            # An undated bundle cannot be ordered: after a dated one it can only be a replay of an old one.
            raise bundles.BundleError(
                f"bundle {bundle.version} has no created time, and bundle {applied.version} in effect was created "
                f"{applied.created}: a rollback to an undated bundle (repack it with npuctl bundle pack, which dates "
                f"it); set allowRollback: true on source {source.name} to accept it")
        if (applied and applied.created and bundle.created and not source.allow_rollback
                and bundle.created < datetime.fromisoformat(applied.created)):
            raise bundles.BundleError(
                f"bundle {bundle.version} (created {bundle.created.isoformat()}) is older than bundle "
                f"{applied.version} in effect (created {applied.created}): a rollback; set allowRollback: true "
                f"on source {source.name} to accept older bundles")

    def _check_expiry(self, source: ManifestSource, state: SourceState) -> None:
        # After every poll, whatever its outcome: a frozen mirror answers 304 forever, and a dead or stalled
        # server must not hide that the bundle in effect is past its expiry either.
        applied = self.applied.get(source.name)
        if not (applied and applied.expires and datetime.fromisoformat(applied.expires) < datetime.now(UTC)):
            return
        expired = f"bundle {applied.version} in effect expired at {applied.expires}"
        if state.state == "Synced":
            state.state = "Rejected"
            state.message = f"{expired} and the source serves no newer one; keeping it"
        elif expired not in state.message:
            state.message = f"{state.message}; {expired}"

    def _apply(self, source: ManifestSource, bundle: bundles.Bundle, state: SourceState, digest: str | None) -> None:
        applied = Applied.of(bundle, digest)
        # Pins first: the reconcile the new file triggers must fetch the steps this bundle pins.
        self.applied[source.name] = applied
        self._save(source.name, applied)
        file = self.file_of(source)
        text = bundle.as_yaml().encode("utf-8")
        if not file.exists() or file.read_bytes() != text:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(file, text)
            state.last_change = now()
            self.wake()
        state.state, state.message, state.version = "Synced", f"{len(bundle.manifests)} manifest(s)", bundle.version

    def _load(self, name: str) -> Applied | None:
        if self._records is None:
            return None
        try:
            return Applied(**json.loads((self._records / f"{name}.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable source record %s: %s", self._records / f"{name}.json", exc)
            return None

    def _save(self, name: str, applied: Applied) -> None:
        if self._records is not None:
            self._records.mkdir(parents=True, exist_ok=True)
            atomic_write(self._records / f"{name}.json", json.dumps(asdict(applied), indent=1).encode())


def _abandoned(task: asyncio.Future[None]) -> None:
    """Retrieves how an abandoned poll ended, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True
