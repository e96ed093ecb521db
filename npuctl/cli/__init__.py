"""The `npuctl` command line: parse, call the library, print; nothing else lives here. One module per
command group: `manifests` (validate, schema, devices), `agents` (agent, up, serve), `control` (apply,
diff, get, describe, delete, events: an agent's control API through `client`, many agents through
`fleet`), `dashboard` (a lab's dashboard page), `bench` (a deployment's figures on its PC; the load in
`benching`), `builds` (build, cache), `bundles` (bundle); `progress`
is `npuctl up`'s console.

Exit codes: 0 success (a server, agent, up or serve, stopped with Ctrl-C included), 1 the input is invalid (or,
for diff, differs), 2 usage or I/O error."""

import click

from npuctl import __version__
from npuctl.cli import agents, bench, builds, bundles, control, dashboard, manifests


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="npuctl")
def cli() -> None:
    """Declarative model deployment for Qualcomm Hexagon NPUs."""


for command in (manifests.validate, manifests.schema, manifests.devices, agents.agent, agents.up, agents.serve,
                control.apply, control.diff, control.get, control.describe, control.delete, control.events,
                builds.build, builds.cache, bundles.bundle, dashboard.dashboard_command, bench.bench):
    cli.add_command(command)


def main() -> None:
    cli()
