"""Model sources: URIs resolved to local files (file:, pkg:, hf:, https:, GGUF) and prebuilt packs with their wrappers."""
