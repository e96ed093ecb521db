"""The dashboard in the browser: `GET /` on an agent and on `npuctl serve`, and `npuctl dashboard --agents FILE`
for a lab. The page (web/, plain HTML, CSS and JS shipped in the package) polls one JSON endpoint built from the
agent's status models and the server's own metric timeline; it is read-only and guarded like the control API."""
