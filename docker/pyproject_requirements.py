"""The pinned dependencies of pyproject.toml that one image needs: printed, or installed into a new venv.

The images install exactly the versions that the project pins (and tests), without keeping a second list:
    python pyproject_requirements.py pyproject.toml --venv /opt/venv --without torch ...   (application images)
    python pyproject_requirements.py pyproject.toml --venv /opt/venv --only torch torchserve ...   (TorchServe)
Without --venv it prints them, one per line, for pip install -r. With it, TORCH_INDEX_URL (a build argument of
the model-server images) is an extra index when set, e.g. a CPU-only torch wheel index where one is reachable.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def by_name(specs: list[str]) -> dict[str, str]:
    return {canonical(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]): spec for spec in specs}


def requirements(pyproject: Path, only: list[str] | None = None, without: list[str] | None = None) -> list[str]:
    """``only``: these, from the dependencies or an optional extra; ``without``: every dependency but these."""
    project = tomllib.loads(pyproject.read_text())["project"]
    dependencies = by_name(project["dependencies"])
    extras = by_name([spec for specs in project.get("optional-dependencies", {}).values() for spec in specs])
    named = extras | dependencies
    wanted = [canonical(name) for name in only] if only else list(dependencies)
    missing = [name for name in [*wanted, *map(canonical, without or [])] if name not in named]
    if missing:
        raise SystemExit(f"{pyproject} does not depend on {', '.join(missing)}; update docker/*/Dockerfile")
    dropped = {canonical(name) for name in without or []}
    return [named[name] for name in wanted if name not in dropped]


def install(requirements_: list[str], folder: Path) -> None:
    """A venv in ``folder`` with exactly ``requirements_`` installed."""
    venv.create(folder, with_pip=True)
    index = ["--extra-index-url", os.environ["TORCH_INDEX_URL"]] if os.environ.get("TORCH_INDEX_URL") else []
    pip = [str(folder / "bin" / "pip"), "install", "--disable-pip-version-check", *index, *requirements_]
    subprocess.run(pip, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--only", nargs="+", metavar="NAME", help="just these dependencies")
    choice.add_argument("--without", nargs="+", metavar="NAME", help="every dependency but these")
    parser.add_argument("--venv", type=Path, metavar="DIR", help="create this venv and install them into it")
    args = parser.parse_args(argv)
    pinned = requirements(args.pyproject, only=args.only, without=args.without)
    if args.venv:
        install(pinned, args.venv)
    else:
        print("\n".join(pinned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
