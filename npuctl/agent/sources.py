"""Pull-based manifest sources: each agent polls a signed bundle URL and writes what verifies into its
watched folder, where the reconcile loop takes it like any edit. Polls carry If-None-Match and a
jittered interval, so a fleet's agents neither download unchanged bundles nor arrive in the same second.
An unreachable source or a bundle that fails verification leaves the last good bundle in place."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from npuctl.agent import bundles
from npuctl.agent.config import ManifestSource
from npuctl.agent.files import atomic_write
from npuctl.agent.status import now


@dataclass
class SourceState:
    name: str
    url: str
    state: str = "Pending"
    """Pending, Synced, Unreachable or Rejected."""
    message: str = ""
    version: str | None = None
    """Version of the bundle in effect (the last good one)."""
    last_poll: str | None = None
    last_change: str | None = None
    polls: int = 0
    etag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "etag"}


class SourcePoller:
    def __init__(self, sources: list[ManifestSource], folder: Path, wake: Callable[[], None],
                 rng: random.Random | None = None) -> None:
        self.sources = sources
        self.folder = folder
        self.wake = wake
        self.rng = rng or random.Random()
        self.states = {s.name: SourceState(s.name, s.url) for s in sources}

    def file_of(self, source: ManifestSource) -> Path:
        return self.folder / f"{source.name}.bundle.yaml"

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as client:
            await asyncio.gather(*(self._follow(client, source, stop) for source in self.sources))

    async def _follow(self, client: httpx.AsyncClient, source: ManifestSource, stop: asyncio.Event) -> None:
        # The first poll too is spread out: a fleet rebooting together must not arrive together.
        delay = self.rng.uniform(0, min(source.interval_seconds, 10.0))
        while not await _stopped(stop, delay):
            await self.poll(client, source)
            delay = source.interval_seconds * self.rng.uniform(0.8, 1.2)

    async def poll(self, client: httpx.AsyncClient, source: ManifestSource) -> None:
        state = self.states[source.name]
        state.polls += 1
        state.last_poll = now()
        headers = {"If-None-Match": state.etag} if state.etag else {}
        try:
            response = await client.get(source.url, headers=headers)
            if response.status_code == 304:
                return
            response.raise_for_status()
            signature = await client.get(bundles.signature_location(source.url))
            signature.raise_for_status()
        except httpx.HTTPError as exc:
            state.state, state.message = "Unreachable", f"{type(exc).__name__}: {exc}; keeping bundle {state.version}"
            return
        try:
            bundles.verify(response.content, signature.text, source.public_key)
            bundle = bundles.parse(response.content)
        except bundles.BundleError as exc:
            state.state, state.message = "Rejected", f"{exc}; keeping bundle {state.version}"
        else:
            self._apply(source, bundle, state)
        state.etag = response.headers.get("etag")

    def _apply(self, source: ManifestSource, bundle: bundles.Bundle, state: SourceState) -> None:
        file = self.file_of(source)
        text = bundle.as_yaml().encode("utf-8")
        if not file.exists() or file.read_bytes() != text:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(file, text)
            state.last_change = now()
            self.wake()
        state.state, state.message, state.version = "Synced", f"{len(bundle.manifests)} manifest(s)", bundle.version


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True
