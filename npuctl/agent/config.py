"""The agent's own configuration: where manifests, state and cache live, where it listens, its timing."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from npuctl.artifacts.oci import refs
from npuctl.artifacts.published.location import StoreLocation
from npuctl.runtime.devices import check_facts
from npuctl.schema.models import DNS_LABEL
from npuctl.schema.power import PowerDefaults
from npuctl.serve.http.connections import ConnectionLimits
from npuctl.serve.http.guards import check_origin

DEFAULT_PORT = 8765
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


class ManifestSource(BaseModel):
    """A bundle URL an agent follows (agent config `sources:`)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid",
                              use_attribute_docstrings=True)

    name: str
    """Names the file the bundle is written to: `<first manifests folder>/<name>.bundle.yaml`."""
    url: str
    """http(s) URL of the bundle JSON (its signature at the same URL + `.sig`), or oci://HOST[:PORT]/REPO:TAG
    of a bundle pushed with `npuctl bundle push`."""
    public_key: str
    """The publisher's ed25519 public key (base64 of 32 bytes, as `npuctl bundle keygen` prints)."""
    interval_seconds: float = Field(300.0, gt=0)
    """Mean time between polls; each wait is jittered by ±20%."""
    allow_rollback: bool = False
    """Accept a bundle created before the one in effect, or an undated one after a dated one (by default it is
    Rejected: a replayed old bundle)."""
    poll_timeout_seconds: float = Field(60.0, gt=0)
    """Deadline of one whole poll (bundle, signature, redirects; for oci:// the manifest and layer). A poll past
    it is abandoned, the source shows `Stalled`, and the next poll comes at the usual interval."""
    redirect_hosts: list[str] = []
    """http(s) sources: hosts besides the bundle URL's own origin that its redirects may lead to (a CDN); `*`
    for any. Redirects never go from https to http. oci:// sources do not take it: their blob downloads may
    redirect to any https host (registries hand them to storage; the bytes are checked against their digest),
    their manifests only within the registry."""
    cosign_public_key: str | None = None
    """oci:// only: also require a cosign signature (`.sig` tag, ECDSA P-256) by this PEM public key."""
    insecure: bool = False
    """oci:// only: plain http to the registry (a lab registry). TLS is verified otherwise."""
    username: str | None = None
    """oci:// only: registry user; without it, docker's config.json and credential helpers are asked."""
    password: SecretStr | None = None
    """oci:// only: the user's password or access token. Never logged."""
    allow_local_sources: bool = False
    """Let this bundle's manifests use `file:` sources, inside the agent's `modelRoots` only. Off by default:
    a bundle publisher could otherwise probe the files of every PC of the fleet."""

    @field_validator("name")
    @classmethod
    def _label(cls, name: str) -> str:
        if not DNS_LABEL.match(name):
            raise ValueError(f"{name!r} is not a DNS-1123 label")
        return name

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if refs.is_oci(url):
            refs.parse(url, need_tag=True)
        elif not url.startswith(("https://", "http://")):
            raise ValueError(f"{url!r} is not an http(s) URL nor an oci://HOST/REPO:TAG reference")
        return url

    @model_validator(mode="after")
    def _redirects_for_http(self) -> ManifestSource:
        if self.redirect_hosts and self.oci:
            raise ValueError("redirectHosts is for http(s) sources; an oci:// source's blobs may redirect to any "
                             "https host already, its manifests to none")
        return self

    @property
    def oci(self) -> bool:
        return refs.is_oci(self.url)


class BuildDeadlines(BaseModel):
    """How long one build step may take before its build process is stopped (agent config `buildDeadlines`).
    A stopped build is a temporary failure: retried after the backoff, its finished steps kept."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid",
                              use_attribute_docstrings=True)

    sources_seconds: float = Field(600.0, gt=0)
    """Resolving a source (reading and hashing local files, downloading `hf:`/`https:` ones), and any stretch
    between steps (starting the build process, re-hashing stored files). Short: a healthy disk reads a
    3B model's 6 GB in well under a minute, so past this a mount or server has stopped answering. Raise it
    for multi-GB downloads over a slow link."""
    step_seconds: float = Field(14400.0, gt=0)
    """Each other step (export, quantize, compile, verify, LLM packing). Long: exporting and quantizing
    a 3B LLM on a laptop CPU takes one to two hours."""


class Budget(BaseModel):
    """What the agent process and the models it loads may take together (agent config `budget`). `onDemand`
    deployments load only within it, evicting idle ones when they must; `always` ones load regardless, and count."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid",
                              use_attribute_docstrings=True)

    memory: int | str = Field("50%", union_mode="left_to_right")
    """Host memory for the whole agent process, in bytes, or a share of this machine's (`"50%"`: 8 GB on a 16 GB
    PC, leaving the rest to the OS and the applications beside it). The agent's own memory, measured at its start,
    is charged first; the models share the rest."""
    npu_sessions: int = Field(8, ge=0)
    """NPU (QNN HTP) sessions open at once: the HTP driver gives each process only a few."""
    npu_memory: int | None = Field(None, ge=0)
    """Bytes of context binaries on the NPU at once, where the device reports a limit (none by default: each
    HTP session has its own bounded address space, which the build's bucket sizes already respect)."""

    @field_validator("memory")
    @classmethod
    def _memory(cls, memory: int | str) -> int | str:
        if isinstance(memory, int):
            if memory < 0:
                raise ValueError("memory must be a number of bytes (>= 0) or a share like '50%'")
            return memory
        share = memory.removesuffix("%")
        if not memory.endswith("%") or not share.replace(".", "", 1).isdigit() or not 0 < float(share) <= 100:
            raise ValueError(f"{memory!r} is neither a number of bytes nor a share of this machine's memory "
                             "between '1%' and '100%'")
        return memory

    def memory_bytes(self, machine: int) -> int:
        """The memory budget in bytes on a machine with `machine` bytes of memory."""
        if isinstance(self.memory, int):
            return self.memory
        return int(machine * float(self.memory.removesuffix("%")) / 100)


class AgentConfig(BaseModel):
    """Settings of one agent process. In a file: YAML with these keys in camelCase (see agent/agent.example.yaml)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid",
        use_attribute_docstrings=True,
    )

    manifests: list[Path] = Field(default_factory=lambda: [Path("manifests")], min_length=1)
    """Folders watched for manifests. `npuctl apply` writes into the first."""
    listen: str = DEFAULT_LISTEN
    """HOST:PORT for the model endpoints and the control API (one port)."""
    remote_access: bool = False
    """Allow `listen` on an address other than loopback. Every control call, reads included, then needs the
    token; the model endpoints are open to whoever reaches the address."""
    state: Path = Field(default_factory=lambda: Path(platformdirs.user_state_dir("npuctl")))
    """Folder for status and the API token (owner-only)."""
    cache: Path | None = None
    """Artifact store (default: the build library's, under the user's data folder; or NPUCTL_CACHE)."""
    resync_seconds: float = Field(30.0, gt=0)
    """Full reconcile at least this often, whatever the file watcher saw."""
    debounce_ms: float = Field(250.0, ge=0)
    """Quiet time after a file event before reconciling (editors write files in several steps)."""
    settle_seconds: float = Field(5.0, ge=0)
    """A changed manifest file is applied only once it has been unchanged this long, so one written in
    several steps seconds apart is never applied half-written (`npuctl apply` writes apply at once)."""
    backoff_seconds: tuple[float, float] = (2.0, 300.0)
    """First and longest wait before retrying a failed build or load (doubling in between)."""
    labels: dict[str, str] = {}
    """This agent's labels, matched by deployments' spec.selector.matchLabels."""
    facts: dict[str, str | int | float] = {}
    """Device facts that replace detected ones (soc, socModel, htpArch, os, arch, memoryGiB, npu), e.g.
    `{socModel: 60}` on a build host standing in for the Snapdragon X Elite PCs it provisions. Selectors,
    artifact choice and the context-binary compatibility check all use them."""
    sources: list[ManifestSource] = []
    """Signed manifest bundles to follow (fleets): each is polled and written into the first manifests folder."""
    artifact_sources: list[str | StoreLocation] = []
    """Published artifact stores (`npuctl build --publish`): oci://HOST/REPO references, http(s) URLs or folders,
    asked in order for each build step before it runs; the step is built here only when none has it. An entry
    may be a mapping `{url, insecure, username, password}` for a registry's options."""
    allowed_hosts: list[str] = []
    """Host names (besides this agent's IP address, and `localhost` on loopback) that requests may carry in
    their `Host` header, e.g. the machine's DNS name for remote clients. Others get 421: a DNS-rebinding web
    page cannot reach the agent. `*` allows any."""
    cors_origins: list[str] = []
    """Web origins (`https://app.example`) whose pages may call the agent from a browser (CORS, with preflight
    answers). None by default: a request with a foreign `Origin` gets 403."""
    body_timeout_seconds: float = Field(30.0, gt=0)
    """Time a client has to send a request's whole body; slower ones get 408 and the connection is closed."""
    header_timeout_seconds: float = Field(ConnectionLimits.header_timeout_seconds, gt=0)
    """Time a client has to send a request's headers, from opening the connection (or from the first byte of a
    later request on it); slower ones get 408 and the connection is closed."""
    keep_alive_seconds: int = Field(ConnectionLimits.keep_alive_seconds, ge=1)
    """An idle connection between two requests is closed after this many seconds."""
    max_connections: int = Field(ConnectionLimits.max_connections, ge=1)
    """Open client connections at most; one more is answered 503 and closed at once."""
    build_deadlines: BuildDeadlines = BuildDeadlines()
    """Deadlines per build step kind; see BuildDeadlines."""
    budget: Budget = Budget()
    """What loaded models may take together; see Budget."""
    build_workers: int = Field(2, ge=1, le=16)
    """Builds run at once. Two, so that a build waiting on a slow source until its deadline does not hold
    up the others; each build is a child process, so more means more memory at once."""
    model_roots: list[Path] = []
    """Folders (besides each manifest's own folder) that `file:` sources may point into, after links are
    resolved. Manifests from bundles (`sources:`) may point only into these, and only with the source's
    `allowLocalSources`."""
    aihub_token: SecretStr | None = None
    """Qualcomm AI Hub API token for `build.strategy: aihub` (default: qai-hub's own INI file). Never logged."""
    power: PowerDefaults = PowerDefaults()
    """The power policy of deployments without `spec.runtime.power`, by power source, and the CPU thread pool."""

    @field_validator("artifact_sources")
    @classmethod
    def _references(cls, sources: list[str | StoreLocation]) -> list[str | StoreLocation]:
        for source in sources:
            url = source.url if isinstance(source, StoreLocation) else source
            if refs.is_oci(url):
                refs.parse(url, allow_tag=False)
        return sources

    @property
    def registries(self) -> list[StoreLocation]:
        """The oci:// artifact sources, with their options."""
        found = [s if isinstance(s, StoreLocation) else StoreLocation(url=s) for s in self.artifact_sources]
        return [s for s in found if refs.is_oci(s.url)]

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{listen!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
        return listen

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            check_origin(origin)
        return origins

    @field_validator("facts")
    @classmethod
    def _known_facts(cls, facts: dict[str, str | int | float]) -> dict[str, str | int | float]:
        check_facts(facts)
        return facts

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.header_timeout_seconds, self.keep_alive_seconds, self.max_connections)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_overrides(self, *, manifests: Sequence[Path] = (), listen: str | None = None, state: Path | None = None,
                       cache: Path | None = None, labels: Mapping[str, str] | None = None,
                       remote_access: bool = False) -> AgentConfig:
        """This config with the command line's options on top, each validated as in a file; labels are merged."""
        update: dict[str, object] = {}
        if manifests:
            update["manifests"] = list(manifests)
        if listen:
            update["listen"] = listen
        if state:
            update["state"] = state
        if cache:
            update["cache"] = cache
        if labels:
            update["labels"] = {**self.labels, **labels}
        if remote_access:
            update["remote_access"] = True
        return type(self).model_validate({**dict(self), **update})
