"""OpenAI's API: embeddings and model listings (`embeddings`), chat and text completions (`chat`, `replies`), the
Responses API (`responses`, its body in `responses_request`, answers kept in `responses_store`), their request
models (`requests`) and the fields refused with a 400 (`fields`)."""
