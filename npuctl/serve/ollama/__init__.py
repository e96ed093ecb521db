"""Ollama's API: chat, generate, embed, listings (`routes`, `listings`); its request bodies as models (`bodies`), what
they ask of a generation (`generating`), and the model name and keep_alive they share (`requests`)."""
