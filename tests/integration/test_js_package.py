"""clients/js is a publishable npm package: what `npm pack` would publish."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
IMPORT = re.compile(r"""(?:import|from)\s*["'](\./[^"']+)["']""")
pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


def test_npm_pack_publishes_the_client_and_nothing_else() -> None:
    manifest = json.loads((JS / "package.json").read_text())
    assert "private" not in manifest  # `npm publish` refuses a private package
    assert manifest["license"] == "MIT" and manifest["version"]
    done = subprocess.run(
        ["npm", "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    files = {entry["path"] for entry in json.loads(done.stdout)[0]["files"]}
    entry = {"package.json", "README.md", "pgcast.js", "react.js"}
    assert entry | {"types/pgcast.d.ts", "types/react.d.ts"} <= files
    assert not any(f.startswith(("test/", "node_modules/")) for f in files), files
    # every entry point and every module they import, transitively, is in the package
    for export in manifest["exports"].values():
        for target in export.values():
            assert os.path.normpath(target) in files, target
    for name in (f for f in files if f.endswith(".js")):
        for target in IMPORT.findall((JS / name).read_text()):
            assert os.path.normpath(os.path.join(os.path.dirname(name), target)) in files
