"""References to things in a registry: `oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SCHEME = "oci://"
# From the distribution spec: path components of lowercase alphanumerics and separators; tags up to 128.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$")


class ReferenceError(ValueError):
    """Not an oci:// reference (the message says which part is wrong and what would be right)."""


@dataclass(frozen=True)
class Reference:
    host: str
    """HOST or HOST:PORT, as in docker's config.json keys."""
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """HOST/REPO, as cosign's `docker-reference` and `docker login` name it."""
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"{SCHEME}{self.name}{suffix}"


def is_oci(location: str) -> bool:
    return location.startswith(SCHEME)


def parse(location: str, *, need_tag: bool = False, allow_tag: bool = True) -> Reference:
    """`oci://HOST[:PORT]/REPO[:TAG|@DIGEST]`. need_tag: a tag (or digest) must be given; allow_tag: False
    for a repository that holds many tags (a step store)."""
    if not is_oci(location):
        raise ReferenceError(f"{location!r} is not an oci:// reference (e.g. oci://registry.example.com/fleet/steps)")
    rest = location[len(SCHEME):]
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise ReferenceError(f"{location!r} names no repository: expected oci://HOST[:PORT]/REPO")
    if not _HOST.match(host):
        raise ReferenceError(f"{location!r}: {host!r} is not HOST[:PORT]")
    tag = digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST.match(digest):
            raise ReferenceError(f"{location!r}: {digest!r} is not a digest (sha256: and 64 lowercase hex digits)")
    elif ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            raise ReferenceError(f"{location!r}: {tag!r} is not a tag ([A-Za-z0-9_][A-Za-z0-9._-], at most 128)")
    if not _REPOSITORY.match(path):
        raise ReferenceError(f"{location!r}: {path!r} is not a repository name (lowercase letters, digits, "
                             "'.', '_', '-', components separated by '/')")
    if need_tag and not (tag or digest):
        raise ReferenceError(f"{location!r} names no tag: expected oci://HOST/REPO:TAG")
    if not allow_tag and (tag or digest):
        raise ReferenceError(f"{location!r}: a step repository takes no tag (each step is tagged by its key)")
    return Reference(host, path, tag, digest)
