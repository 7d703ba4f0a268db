"""The embedded server's user must be able to reach its binaries and data directory."""

from __future__ import annotations

import stat
from pathlib import Path

from pgcast.embedded import _make_traversable


def test_private_ancestors_become_enterable_but_not_listable(tmp_path: Path) -> None:
    private = tmp_path / "home"
    target = private / "venv" / "bin" / "postgres"
    target.parent.mkdir(parents=True)
    target.write_text("")
    private.chmod(0o700)
    (private / "venv").chmod(0o700)

    _make_traversable(target)

    for ancestor in (private, private / "venv", private / "venv" / "bin"):
        mode = ancestor.stat().st_mode
        assert mode & stat.S_IXOTH, ancestor
        assert not mode & stat.S_IROTH or ancestor == private / "venv" / "bin", ancestor
    assert stat.S_IMODE(private.stat().st_mode) == 0o701
