"""The reconciling agent: watches manifest folders, builds and loads what they declare, serves it,
and reports status. Holds the loop, the watcher, status, the control API and the agent's config;
the building, session and HTTP-serving work itself lives in npuctl.artifacts, npuctl.runtime and npuctl.serve."""
