"""Print the pinned dependencies of pyproject.toml that one image needs, one per line, for pip install -r.

The images install exactly the versions that the project pins (and tests), without keeping a second list:
    python pyproject_requirements.py pyproject.toml --without torch torchvision ...   (application images)
    python pyproject_requirements.py pyproject.toml --only torch torchserve ...       (TorchServe image)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--only", nargs="+", metavar="NAME", help="just these dependencies")
    choice.add_argument("--without", nargs="+", metavar="NAME", help="every dependency but these")
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.pyproject, only=args.only, without=args.without)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
