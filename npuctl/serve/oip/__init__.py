"""The Open Inference Protocol (KServe v2) with Triton's extensions: routes, binary tensors, repository, task metadata."""
