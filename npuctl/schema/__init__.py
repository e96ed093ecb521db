"""The API's contracts: pydantic models of `ModelDeployment` (`models`), the SoC table (`targets`), the
YAML loader that places every error at file:line:col (`loader`), the names two deployments cannot share
(`clashes`), loading many files and folders at once (`folders`), and the status the agent reports (`status`, published
as schema/status.schema.json, with a chat pack's `placement` and a loaded model's `cost`). No I/O
beyond reading manifest files; imports nothing else of npuctl but npuctl.errors."""

from npuctl.schema.errors import ManifestError
from npuctl.schema.folders import load_paths
from npuctl.schema.loader import (
    LoadedDeployment,
    LoadResult,
    load_file,
    load_text,
)
from npuctl.schema.models import (
    API_VERSION,
    KIND,
    Api,
    Device,
    Fallback,
    Format,
    Metric,
    ModelDeployment,
    Pooling,
    Precision,
    Strategy,
    Target,
    Task,
)
from npuctl.schema.targets import SOCS, SocInfo, describe_soc, soc_by_model

__all__ = [
    "API_VERSION",
    "KIND",
    "SOCS",
    "Api",
    "Device",
    "Fallback",
    "Format",
    "LoadResult",
    "LoadedDeployment",
    "ManifestError",
    "Metric",
    "ModelDeployment",
    "Pooling",
    "Precision",
    "SocInfo",
    "Strategy",
    "Target",
    "Task",
    "describe_soc",
    "load_file",
    "load_paths",
    "load_text",
    "soc_by_model",
]
