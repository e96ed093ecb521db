"""The reconciling agent: watches manifest folders, builds and loads what they declare, serves it,
and reports status. The building, session and HTTP-serving work itself lives in npuctl.artifacts,
npuctl.runtime and npuctl.serve; the status models in npuctl.schema.status.

    desired     what the folders declare (last good version of a broken file, settling, name clashes)
    records     one Record per deployment (activity, what runs, last failures) and the Outcome of work
    reconcile   the loop: each pass compares desired and records and starts the next build or load
    conditions  a deployment's conditions and phase from its record
    health      what is wrong beyond one deployment: the state folder, files that declare nothing
    actuator    the Actuator protocol and the local one (build in a child process, load, route)
    sharing     loaded models shared, reference-counted, by deployments with the same artifacts
    status      the status book (saved in the state folder) and the event log
    api         the control API; watcher, sources, bundles, config, auth, metrics, main: the rest"""
