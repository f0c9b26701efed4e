"""lit_cologen.utils.atomic: the one atomic-write helper every writer of the suite uses."""

from __future__ import annotations

import errno
import json

import pytest

from lit_cologen.utils.atomic import atomic_path, atomic_write, atomic_write_json, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1}, sort_keys=True, newline=True)
    assert target.read_text() == '{\n  "a": 1\n}\n'

    def broken(f):
        f.write(b"{half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write .*x\.json: No space left on device .*earlier version.*intact"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1} and sorted(p.name for p in target.parent.iterdir()) == ["x.json"]
    with pytest.raises(ValueError):  # not an OSError: raised as it is
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError("library failed")
    assert not (tmp_path / "y.bin").exists() and not list(tmp_path.glob(".y.bin.*"))
    with atomic_path(tmp_path / "y.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    atomic_write_text(tmp_path / "z.txt", "é")
    assert (tmp_path / "y.png").read_bytes() == b"png" and (tmp_path / "z.txt").read_text(encoding="utf-8") == "é"
