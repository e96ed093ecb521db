"""Shared artifact stores for fleets: publishing built steps, and fetching them by key from a folder, http(s) or OCI."""
