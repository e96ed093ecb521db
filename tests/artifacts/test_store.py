"""The artifact store: atomic commits, sha256-checked reads, verify, temp cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from npuctl.artifacts import Store
from npuctl.artifacts.facts import Quantize
from npuctl.artifacts.store import CACHE_ENV, default_root
from npuctl.schema.models import Precision

FACTS = Quantize(precision=Precision.W8A16, calibration_samples=16)


def put(store: Store, key: str, content: bytes = b"weights") -> None:
    work = store.new_workdir(key)
    (work / "model.bin").write_bytes(content)
    (work / "sub").mkdir()
    (work / "sub" / "config.json").write_text("{}")
    with store.lock(key):
        store.commit(work, key=key, inputs={"model": "abc"}, parameters={"precision": "w8a16"},
                     tool_versions={"onnxruntime": "x"}, seconds=1.5, details=FACTS)


def test_commit_then_get_returns_the_record(store: Store) -> None:
    put(store, "k1")
    record = store.get("k1")
    assert record is not None
    assert record.step == "quantize" and record.details == FACTS
    assert [f.path for f in record.files] == ["model.bin", "sub/config.json"]
    assert record.path("model.bin").read_bytes() == b"weights"
    assert list(store.tmp_dir.iterdir()) == []


def test_work_in_progress_is_invisible(store: Store) -> None:
    work = store.new_workdir("k2")
    (work / "model.bin").write_bytes(b"half")
    assert store.get("k2") is None and store.records() == []


def test_a_changed_byte_makes_the_record_absent_and_verify_drops_it(store: Store) -> None:
    put(store, "k3")
    put(store, "k4")
    file = store.steps_dir / "k3" / "model.bin"
    file.write_bytes(b"weightz")
    assert store.get("k3") is None
    problems = store.verify()
    assert [(p.key, p.step) for p in problems] == [("k3", "quantize")]
    assert "model.bin has sha256" in problems[0].message
    assert not (store.steps_dir / "k3").exists() and store.get("k4") is not None


def test_missing_file_and_broken_record_are_reported(store: Store) -> None:
    put(store, "k5")
    put(store, "k6")
    (store.steps_dir / "k5" / "sub" / "config.json").unlink()
    (store.steps_dir / "k6" / "record.json").write_text("{not json")
    problems = {p.key: p.message for p in store.verify(drop=False)}
    assert problems == {"k5": "sub/config.json is missing", "k6": "record.json is missing or unreadable"}


def test_recommit_replaces_a_bad_entry(store: Store) -> None:
    put(store, "k7", b"old")
    (store.steps_dir / "k7" / "model.bin").write_bytes(b"bad")
    put(store, "k7", b"new")
    record = store.get("k7")
    assert record is not None and record.path("model.bin").read_bytes() == b"new"


def test_clean_tmp_skips_keys_being_built(store: Store) -> None:
    dead = store.new_workdir("dead")
    live = store.new_workdir("live")
    with store.lock("live"):
        removed = store.clean_tmp()
    assert removed == [dead] and live.exists()


def test_root_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" and Store().root == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_root().name == "store"
