"""OpenAI's API: embeddings and model listings, chat and text completions, and their response objects."""
