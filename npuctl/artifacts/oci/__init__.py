"""OCI registries as a fleet's distribution system: a small registry client (v2 API over httpx, with the
auth challenges registries use), build steps as OCI artifacts, signed bundles as OCI artifacts, and
cosign-compatible signatures. Nothing here knows about agents or the CLI."""
