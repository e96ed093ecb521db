"""The agent's token: owner-only on disk, the same across starts, and compared exactly."""

from __future__ import annotations

from pathlib import Path

from npuctl.agent.auth import ensure_token, token_matches


def test_token_is_owner_only_and_compared_exactly(tmp_path: Path) -> None:
    token = ensure_token(tmp_path / "state")
    assert ensure_token(tmp_path / "state") == token
    assert (tmp_path / "state" / "token").stat().st_mode & 0o077 == 0
    assert token_matches(f"Bearer {token}", token)
    assert not token_matches(f"Bearer {token}x", token) and not token_matches(None, token)
    assert not token_matches(token, token)
