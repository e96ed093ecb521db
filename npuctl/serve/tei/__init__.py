"""Hugging Face's text-embeddings-inference (TEI: /embed, /predict, /rerank) and text-generation-inference (TGI:
/generate, /generate_stream) routes, and /info, as huggingface_hub's InferenceClient(model=URL) calls them: at the
server's root too, for the one model of the kind that serves."""
