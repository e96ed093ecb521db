"""Names two deployments cannot share: `metadata.name`, and the names a deployment is served under
(`spec.serve.name`, default its `metadata.name`, and `spec.serve.aliases`). The first to claim a name
keeps it; every later claim is a clash, reported at the later deployment's field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from npuctl.schema.errors import ManifestError
from npuctl.schema.loader import LoadedDeployment, Loc


def served_names(loaded: LoadedDeployment) -> list[tuple[str, Loc]]:
    """The public name and the aliases, each with the field that declares it."""
    deployment = loaded.deployment
    serve = deployment.spec.serve
    name_field: Loc = ("spec", "serve", "name") if serve.name else ("metadata", "name")
    names = [(deployment.public_name, name_field)]
    names += [(alias, ("spec", "serve", "aliases", i)) for i, alias in enumerate(serve.aliases)
              if alias != deployment.public_name]
    return names


@dataclass(frozen=True)
class Clash:
    loaded: LoadedDeployment
    """The later deployment, which does not get the name."""
    other: LoadedDeployment
    """The deployment that claimed it first."""
    name: str
    field: Loc
    """The later deployment's field that claims it."""

    @property
    def duplicate(self) -> bool:
        """Both declare the same metadata.name (rather than one serving under the other's name)."""
        return self.field == ("metadata", "name") and self.loaded.name == self.other.name

    @property
    def message(self) -> str:
        if self.duplicate:
            return f"deployment {self.name!r} is already declared at {self.other.where(('metadata', 'name'))}"
        return (f"model name {self.name!r} is already served by deployment {self.other.name!r} "
                f"({self.other.where()})")

    def error(self) -> ManifestError:
        where = self.loaded.where(self.field).rsplit(":", 2)
        path = ".".join(str(part) for part in self.field)
        return ManifestError(where[0], int(where[1]), int(where[2]), path, self.message)


def clashes(deployments: Iterable[LoadedDeployment]) -> list[Clash]:
    """Every clash, first come first served in the given order. A deployment with a clash claims
    none of its names, so the one after it is judged without it."""
    names: dict[str, LoadedDeployment] = {}
    served: dict[str, LoadedDeployment] = {}
    found: list[Clash] = []
    for loaded in deployments:
        clash = _first_clash(loaded, names, served)
        if clash is not None:
            found.append(clash)
            continue
        names[loaded.name] = loaded
        served.update({name: loaded for name, _ in served_names(loaded)})
    return found


def _first_clash(loaded: LoadedDeployment, names: dict[str, LoadedDeployment],
                 served: dict[str, LoadedDeployment]) -> Clash | None:
    if loaded.name in names:
        return Clash(loaded, names[loaded.name], loaded.name, ("metadata", "name"))
    for name, field in served_names(loaded):
        if name in served:
            return Clash(loaded, served[name], name, field)
    return None


def without_clashes(deployments: list[LoadedDeployment], errors: list[ManifestError]) -> list[LoadedDeployment]:
    """The deployments that clash with none before them; an error for each of the others."""
    found = clashes(deployments)
    errors.extend(clash.error() for clash in found)
    dropped = {id(clash.loaded) for clash in found}
    return [loaded for loaded in deployments if id(loaded) not in dropped]
