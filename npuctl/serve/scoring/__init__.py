"""Rerank and classify routes (Cohere's, Jina's, infinity's and TEI's shapes) and their shared request checks."""
