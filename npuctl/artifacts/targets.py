"""Which of a deployment's declared targets a build is asked for."""

from __future__ import annotations

from collections.abc import Sequence

from npuctl.artifacts.errors import BuildError
from npuctl.schema.models import ModelDeployment, Target


def targets_of(deployment: ModelDeployment, names: Sequence[str] | None) -> list[Target]:
    """The targets named (aliases or soc<N>), each once; every declared one when none is named."""
    declared = deployment.spec.targets
    if not names:
        return list(declared)
    known = {t.name: t for t in declared} | {f"soc{t.soc_model}": t for t in declared}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BuildError("resolve", f"{', '.join(unknown)}: not a target of {deployment.name} "
                         f"(its targets: {', '.join(t.name for t in declared)})")
    return list({id(known[n]): known[n] for n in names}.values())
