"""Ollama's API: chat, generate, embed, listings, and its request checks."""
