"""Validates compose files against the compose-spec JSON schema (draft 2019-09) that the
docker-compose 1.29.2 wheel ships; prints each error as `<path> <message>` and exits 1 on any.
Run by tests/deploy/schemas.rs with the virtualenv of tests/deploy/setup.sh."""

import json
import sys
import sysconfig

import jsonschema
import yaml

SCHEMA = sysconfig.get_paths()["purelib"] + "/compose/config/compose_spec.json"

with open(SCHEMA, encoding="utf-8") as f:
    schema = json.load(f)
jsonschema.Draft201909Validator.check_schema(schema)
validator = jsonschema.Draft201909Validator(schema)
failed = False
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path)
        print(f"{path}: {where}: {error.message}")
    if errors:
        failed = True
    else:
        print(f"{path}: valid")
sys.exit(1 if failed else 0)
