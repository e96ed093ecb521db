"""Loading the agent's config file: the example loads, paths are relative to the file, bad values are placed."""

from __future__ import annotations

from pathlib import Path

import pytest

from npuctl.agent.main import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_example_agent_config_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    config = load_config(REPO / "agent" / "agent.example.yaml")
    assert config.listen == "127.0.0.1:8765" and config.loopback and config.labels == {"ring": "pilot"}
    (tmp_path / "agent.yaml").write_text("manifests: [m]\nstate: s\nlisten: 0.0.0.0:9000\n")
    config = load_config(tmp_path / "agent.yaml")
    assert config.manifests == [tmp_path / "m"] and config.state == tmp_path / "s" and not config.loopback
    (tmp_path / "bad.yaml").write_text("listen: nowhere\n")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(tmp_path / "bad.yaml")
