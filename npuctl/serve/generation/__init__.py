"""Text generation behind the OpenAI, Ollama and TGI routes: the per-model queue (`queue`), prompts checked against
limits (`completing`), the request models of tools and answer formats (`forms`) and the grammar they become
(`structured`, within `schema_bounds`), log probabilities (`logprobs`) and penalties (`penalties`)."""
