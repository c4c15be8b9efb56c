"""ray_cluster.yaml is a valid cluster-launcher config that matches what the CLI expects."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_validates_against_ray_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(), schema)


def test_node_types_serve_the_cli_resource_requests():
    config = _config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpus = sorted(t["resources"].get("GPU", 0) for t in types.values())
    # train-sweep runs one single-device trial per GPU (--gpus-per-trial 1).
    assert 1 in gpus
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"].get("CPU", 0) > 0 for t in types.values())
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != config["head_node_type"]) <= config["max_workers"]


def test_setup_installs_the_pinned_versions():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    setup = " ".join(_config()["setup_commands"])
    for pin in pins:
        if re.search(r"==|<", pin) and not pin.startswith("ray"):
            assert f'"{pin}"' in setup, pin
    assert '"ray[default,tune]==2.60.0"' in setup
    assert "pip install -q -e ~/harness" in setup


def test_shared_storage_is_mounted_where_docs_say():
    config = _config()
    assert any("/mnt/harness" in command for command in config["initialization_commands"])
    assert "HARNESS_DATA=/mnt/harness/data" in " ".join(config["setup_commands"])
