"""The OpenAPI description of the port: the document, its building blocks, and the paths of each API."""
