"""The reconciling agent: watches manifest folders, builds and loads what they declare, serves it,
and reports status. The building, session and HTTP-serving work itself lives in npuctl.artifacts,
npuctl.runtime and npuctl.serve; the status models in npuctl.schema.status.

    desired     what the folders declare (last good version of a broken file, settling, name clashes)
    records     one Record per deployment (activity, what runs, last failures) and the Outcome of work
    decide      pure: the next Action for a deployment from its record, what is declared and the builds
    reconcile   the loop: each pass decides, applies the actions (builds, loads, swaps), projects status
    conditions  pure: a deployment's conditions and phase (its status) projected from its record
    state_view  the read-only view of agent state the control API and the dashboard read through
    budget      pure: a loaded model's cost (estimated) and which idle models to evict to make room
    residency   onDemand deployments: the requests waiting for a load, idle times, what decide() needs
    reading     the manifests' read, off the event loop and under a deadline; work: a build, a load
    health      what is wrong beyond one deployment: the state folder, files that declare nothing
    actuator    the Actuator protocol and the local one (build in a child process, load, route)
    sharing     loaded models shared, reference-counted, by deployments with the same artifacts
    status      the status book (saved in the state folder) and the event log
    api         the control API; watcher, sources, bundles, config, auth, metrics, main: the rest"""
