"""Turn CustomResourceDefinitions into strict JSON schemas, one file per kind and version.

Used by ``make deploy-schemas`` on the CRDs of KEDA and prometheus-operator (from their Go modules) to
refresh the schemas vendored in tests/deploy/schemas/, which the tests use to validate rendered
ScaledObjects, TriggerAuthentications, ServiceMonitors and PodMonitors offline. Strict: an object
that lists its properties rejects unknown ones, as the API server's pruning of structural schemas would
drop them silently (a misspelt field would otherwise pass).

    python tests/deploy/crd_to_schema.py --out tests/deploy/schemas CRD.yaml...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    """The openAPIV3Schema of a CRD as JSON schema, with additionalProperties false where properties are listed."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        converted.pop("type", None)
        converted["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        converted["additionalProperties"] = False
    return converted


def schema_files(crd: dict) -> dict[str, dict]:
    """{file name: JSON schema} for every served version of one CRD, named <kind>-<group>-<version>.json."""
    spec = crd["spec"]
    kind, group = spec["names"]["kind"], spec["group"]
    files = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["description"] = f"{kind} {group}/{version['name']}, generated from its CRD by crd_to_schema.py"
        schema.setdefault("properties", {}).update(
            {
                "apiVersion": {"enum": [f"{group}/{version['name']}"]},
                "kind": {"enum": [kind]},
                "metadata": {"type": "object"},
            }
        )
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
        files[f"{kind.lower()}-{group}-{version['name']}.json"] = schema
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON schemas")
    parser.add_argument("crds", nargs="+", type=Path, help="CRD YAML files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.crds:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schema_files(document).items():
                (args.out / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
