"""Plumbing every API shares and nothing else of serve: JSON errors, bodies read with caps and deadlines, compression, Host/Origin guards, SSE, per-request limits, uvicorn."""
