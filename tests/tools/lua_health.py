"""Run the Argo CD health check (manifests/gitops/argocd/djangoservice-health.lua) with the real
Lua interpreter (Debian's lua5.4), the way Argo CD runs it: the object as the global `obj`, the
script's returned table as the health."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "manifests" / "gitops" / "argocd" / "djangoservice-health.lua"


def lua_literal(value: Any) -> str:
    """A JSON-like value as a Lua table constructor (JSON null becomes nil, as in Argo CD)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(str(k))}] = {lua_literal(v)}"
                           for k, v in value.items()) + "}"


def interpreter() -> str:
    found = shutil.which("lua5.4")
    if found is None:
        raise RuntimeError("lua5.4 is missing: apt-get install lua5.4 (scripts/setup.sh)")
    return found


def health(obj: dict[str, Any]) -> dict[str, str]:
    """{"status": ..., "message": ...} as Argo CD would compute it for `obj`."""
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local function check()\n{HEALTH_LUA.read_text()}\nend\n"
        "local hs = check()\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    result = subprocess.run([interpreter(), "-"], input=program, capture_output=True,
                            text=True, check=True)
    status, _, message = result.stdout.partition("\n")
    return {"status": status, "message": message}
