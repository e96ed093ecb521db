"""What an NPU chat build is estimated to need, against the host it builds on: figured at resolve from
config.json's sizes, before any step runs (npuctl.artifacts.llm.preflight). Shown as the build's `pre-flight`
step, in the deployment's status and by `npuctl describe`."""

from __future__ import annotations

from npuctl.schema.placement import Fact


class Preflight(Fact):
    """A build's estimated needs and the host's figures when it started."""

    parameters: int
    """The decoder's parameters, from config.json."""
    peak_rss_bytes: int
    """Peak RSS of the build's process tree (its largest stage)."""
    stage_rss_bytes: dict[str, int]
    """Step name -> its estimated peak RSS."""
    disk_bytes: int
    """What the build adds to the store."""
    seconds: float
    """Wall time of the steps up to compile, on a host like this project's (2 x86 cores)."""
    available_memory_bytes: int
    """Memory available on the host when the build started."""
    free_disk_bytes: int
    """Free space where the store is, when the build started."""
    kv_cache_bytes: int = 0
    """One generation's KV cache at spec.generation.contextLength in the pack's graph I/O (uint16 with attention on
    the HTP; 0 with attention on the CPU, whose float cache onnxruntime-genai holds outside the graphs)."""
    kv_cache_element: str | None = None
    """The KV cache's element type at the graphs' I/O (`uint16`); None when the cache is not in the graphs."""

    def shortfall(self) -> str | None:
        """What this host lacks for the build, in words (why the pre-flight refused it); None when it has enough."""
        short = []
        if self.peak_rss_bytes > self.available_memory_bytes:
            short.append(f"~{self.peak_rss_bytes / 2**30:.1f} GiB of RAM at its peak and this host has "
                         f"{self.available_memory_bytes / 2**30:.1f} GiB available")
        if self.disk_bytes > self.free_disk_bytes:
            short.append(f"~{self.disk_bytes / 1e9:.1f} GB of disk in the store and it has "
                         f"{self.free_disk_bytes / 1e9:.1f} GB free")
        return " and ".join(short) or None

    def summary(self) -> str:
        return (f"pre-flight for {self.parameters / 1e9:.2f}B parameters: peak RAM ~{self.peak_rss_bytes / 2**30:.1f} "
                f"GiB ({self.available_memory_bytes / 2**30:.1f} GiB available), disk ~{self.disk_bytes / 1e9:.1f} GB "
                f"({self.free_disk_bytes / 1e9:.1f} GB free in the store), ~{self.seconds / 60:.0f} min up to compile"
                + (f"; KV cache {self.kv_cache_bytes / 2**20:,.1f} MiB"
                   + (f" ({self.kv_cache_element})" if self.kv_cache_element else "") if self.kv_cache_bytes else ""))
