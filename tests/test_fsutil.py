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
