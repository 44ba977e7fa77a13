"""Generate Python code from ``protos/equihome/**.proto`` into ``equihome/``.

One codegen path, used by ``make proto`` and by the hatchling build hook at install.
The proto tree mirrors the import path (``equihome.simulation.v1``), so no import rewriting.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "equihome"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "equihome").rglob("*.proto"))


def generate() -> list[Path]:
    from grpc_tools import protoc  # build-time dependency only
    import importlib.resources

    files = proto_files()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    if not files:
        return []
    # protoc-gen-mypy* live next to the interpreter in a venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--mypy_out=quiet:{ROOT}",
        f"--mypy_grpc_out=quiet:{ROOT}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return files


def main() -> None:
    files = generate()
    print(f"generated {len(files)} proto files into {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
