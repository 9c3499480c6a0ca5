"""Atomic writes leave either the old content or the complete new one."""

from __future__ import annotations

import pytest

from voice_train.fsutil import atomic_dir, atomic_path, write_json_atomic


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "clips"
    with atomic_dir(target) as staging:
        (staging / "a.flac").write_bytes(b"1")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "b.flac").write_bytes(b"2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a.flac"]
    with atomic_dir(target) as staging:
        (staging / "c.flac").write_bytes(b"3")
    assert sorted(p.name for p in target.iterdir()) == ["c.flac"]
    assert [p.name for p in tmp_path.iterdir()] == ["clips"]


def test_remove_stale_temps_takes_only_the_leftovers_of_that_file(tmp_path):
    from voice_train.fsutil import remove_stale_temps

    target = tmp_path / "train_state.pt"
    target.write_bytes(b"the real file")
    (tmp_path / ".train_state.pt.abc123").mkdir()
    (tmp_path / ".train_state.pt.abc123" / "train_state.pt").write_bytes(b"half")
    (tmp_path / ".train_state.pt.x.pt").write_bytes(b"half")
    (tmp_path / ".best_state.pt.abc").write_bytes(b"another file's temp")
    (tmp_path / "train_state.pt.keep").write_bytes(b"not hidden: not ours")
    removed = remove_stale_temps(target)
    assert sorted(p.name for p in removed) == [".train_state.pt.abc123", ".train_state.pt.x.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".best_state.pt.abc",
        "train_state.pt",
        "train_state.pt.keep",
    ]
    assert remove_stale_temps(tmp_path / "missing" / "x.json") == []
