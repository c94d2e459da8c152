"""Offline tests of the Iron Helm chart (run by charts/iron/ci/test-chart.sh).

Helm is the Helm v4 Go SDK bundled in the PyPI package helm-python-sdk (libhelm_c through
ctypes; the package ships no `helm` binary), so `lint`, schema validation and rendering are
exactly Helm's. Every rendered object is validated with kubernetes-validate in strict mode
against the oldest and the newest Kubernetes versions the chart supports; ServiceMonitor and
PrometheusRule against schemas generated from the Prometheus Operator CRD models
(cloudcoil-models-prometheus-operator). The proxy and control configurations rendered into the
ConfigMaps go through the real binaries' `--check-config`, started the way the pod starts them
(command, args, mounted ConfigMap, environment resolved from the rendered Secrets).

helm-unittest (a Helm plugin fetched from GitHub) cannot be installed from a package registry
here; the tests below the "unit tests" marker are its equivalent in Python.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[1]
REPO = CHART.parents[1]
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
INVALID_VALUES = sorted(CHART.glob("ci/invalid/*-values.yaml"))
# Oldest supported (Chart.yaml kubeVersion) and newest kubernetes-validate ships.
KUBE_VERSIONS = os.environ.get("IRON_CHART_KUBE_VERSIONS", "1.25.0,1.37.0").split(",")
RELEASE, NAMESPACE = "iron", "iron-system"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BINARIES = {
    "iron-proxy": Path(os.environ.get("IRON_PROXY_BIN", TARGET / "debug" / "iron-proxy")),
    "iron-control": Path(os.environ.get("IRON_CONTROL_BIN", TARGET / "debug" / "iron-control")),
}
# Secrets the ci values files expect to exist in the cluster (existingSecret).
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
EXTERNAL_SECRETS = {
    "iron-keys": {
        "master-key": MASTER_KEY,
        "proxy-secret": "external-proxy-secret-0123456789",
        "bootstrap-admin-key": "iron_ak_external0123456789abcdefghij",
    },
    "iron-redis-url": {"url": "redis://:pw@redis-ha.databases.svc:6379/0"},
}


# ------------------------------------------------------------------------------ helpers


def ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def merge(base: dict, *overrides: dict) -> dict:
    """Deep merge like Helm's -f layering (maps merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for o in overrides:
        for k, v in o.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


class Rendered:
    def __init__(self, manifests: dict[str, str]):
        self.manifests = manifests
        self.notes = next((v for k, v in manifests.items() if k.endswith("NOTES.txt")), "")
        self.docs = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append(doc)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{kind}/{name} not rendered; have {self.names()}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["metadata"]["name"] == name for d in self.of_kind(kind))

    def names(self) -> list[str]:
        return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in self.docs)

    def workloads(self) -> list[dict]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]

    def container(self, kind: str, name: str, container: str) -> dict:
        spec = self.get(kind, name)["spec"]["template"]["spec"]
        return next(c for c in spec["containers"] if c["name"] == container)

    def config(self, component: str) -> str:
        return self.get("ConfigMap", f"{RELEASE}-{component}")["data"][f"{component}.toml"]


@functools.cache
def _render_cached(values_json: str, namespace: str) -> Rendered:
    return Rendered(chart().render(json.loads(values_json), name=RELEASE, namespace=namespace))


def render(values: dict | None = None, namespace: str = NAMESPACE) -> Rendered:
    return _render_cached(json.dumps(values or {}, sort_keys=True), namespace)


def render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as e:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return str(e.value)


def ci_render(path: Path) -> Rendered:
    return render(load_values(path))


def secret_value(r: Rendered, name: str, key: str) -> str | None:
    if r.has("Secret", name):
        data = r.get("Secret", name).get("data") or {}
        return base64.b64decode(data[key]).decode() if key in data else None
    return EXTERNAL_SECRETS.get(name, {}).get(key)


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------- CRD schemas (ServiceMonitor…)


def _strict(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            _strict(v)
    elif isinstance(node, list):
        for v in node:
            _strict(v)
    return node


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    from cloudcoil.models.prometheus_operator import v1

    return {
        ("monitoring.coreos.com/v1", kind): _strict(getattr(v1, kind).model_json_schema(by_alias=True))
        for kind in ("ServiceMonitor", "PrometheusRule")
    }


def validate_object(doc: dict, version: str) -> None:
    """kubernetes-validate --strict, or the CRD schema for Prometheus Operator kinds."""
    key = (doc["apiVersion"], doc["kind"])
    if key in crd_schemas():
        errors = sorted(jsonschema.Draft202012Validator(crd_schemas()[key]).iter_errors(doc), key=str)
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
        return
    kubernetes_validate.validate(doc, version, strict=True)


# ---------------------------------------------------------------- lint, render, validate


def test_ci_values_files_exist():
    assert {ci_id(p) for p in CI_VALUES} >= {"minimal", "external-redis", "ha", "observability"}
    assert len(INVALID_VALUES) >= 5


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: ci_id(p) if p else "defaults")
def test_helm_lint_strict(values_file, version):
    values = load_values(values_file) if values_file else {}
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, json.dumps(problems, indent=1)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_rendered_objects_are_valid_kubernetes(values_file, version):
    r = ci_render(values_file)
    assert r.docs
    failures = []
    for doc in r.docs:
        try:
            validate_object(doc, version)
        except (kubernetes_validate.ValidationError, AssertionError) as e:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {getattr(e, 'message', e)} at {list(getattr(e, 'path', []))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: no schema ({e.message})")
    assert not failures, "\n".join(failures)


def test_validators_are_strict():
    """The validation above would catch a misspelt field (guards against a lenient validator)."""
    r = ci_render(CHART / "ci/observability-values.yaml")
    deployment = copy.deepcopy(r.get("Deployment", f"{RELEASE}-proxy"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment, KUBE_VERSIONS[-1])
    monitor = copy.deepcopy(r.get("ServiceMonitor", f"{RELEASE}-proxy"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(AssertionError):
        validate_object(monitor, KUBE_VERSIONS[-1])
    rule = copy.deepcopy(r.get("PrometheusRule", RELEASE))
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up"
    with pytest.raises(AssertionError):
        validate_object(rule, KUBE_VERSIONS[-1])


@pytest.mark.parametrize("values_file", INVALID_VALUES, ids=ci_id)
def test_schema_rejects_invalid_values(values_file):
    values = load_values(values_file)
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(values)
    assert "schema" in render_error(values)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def _value_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield prefix + (k,)
            yield from _value_paths(v, prefix + (k,))


def test_schema_describes_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    free_form = set()
    missing = []
    for path in _value_paths(defaults):
        if any(path[: len(f)] == f for f in free_form):
            continue
        node = schema
        for key in path:
            props = node.get("properties")
            if props is None or key not in props:
                node = None
                break
            node = props[key]
        if node is None:
            missing.append(".".join(path))
        elif "description" not in node and "$ref" not in node:
            missing.append(".".join(path) + " (no description)")
        elif node.get("type") == "object" and "properties" not in node:
            free_form.add(path)  # Kubernetes passthrough (resources limits, affinity, …)
    assert not missing, "values without a schema entry: " + ", ".join(missing)

    def closed(node, where):
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{where}: additionalProperties must be false"
            for k, v in node.items():
                closed(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                closed(v, f"{where}[{i}]")

    closed(schema, "$")


def test_defaults_pass_the_schema():
    chart().validate_schema({})
    for p in CI_VALUES:
        chart().validate_schema(load_values(p))


# ------------------------------------------------------- hardened pods: security, resources


def _is_non_root(pod_sc: dict, sc: dict) -> bool:
    run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    return run_as_non_root is True and user not in (None, 0)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_every_pod_is_hardened(values_file):
    r = ci_render(values_file)
    assert r.workloads()
    for w in r.workloads():
        where = f"{w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext") or {}
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod.get("enableServiceLinks") is False, where
        assert (pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        for c in pod.get("initContainers", []) + pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            assert _is_non_root(pod_sc, sc), f"{cw}: must run as a non-root user"
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("privileged") in (None, False), cw
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cw
            assert not sc.get("capabilities", {}).get("add"), cw
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            assert seccomp == "RuntimeDefault", cw
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert res.get(kind, {}).get(resource), f"{cw}: resources.{kind}.{resource} missing"
            assert c.get("livenessProbe") and c.get("readinessProbe"), f"{cw}: probes missing"
            assert not c["image"].endswith(":latest") and ":" in c["image"], f"{cw}: pinned image"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_probes_use_the_health_endpoints(values_file):
    r = ci_render(values_file)
    proxy = r.container("Deployment", f"{RELEASE}-proxy", "proxy")
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    control = r.container("Deployment", f"{RELEASE}-control", "control")
    assert {p["name"]: p["containerPort"] for p in control["ports"]} == {"http": 7070}
    assert control["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert control["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # The listen addresses in the configs are the ports the probes and Services use.
    proxy_cfg = tomllib.loads(r.config("proxy"))
    assert proxy_cfg["server"]["listen"] == "0.0.0.0:8080"
    assert proxy_cfg["server"]["admin_listen"] == "0.0.0.0:9090"
    assert tomllib.loads(r.config("control"))["server"]["listen"] == "0.0.0.0:7070"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_services_select_their_pods(values_file):
    r = ci_render(values_file)
    pods = {
        f"{w['kind']}/{w['metadata']['name']}": w["spec"]["template"]["metadata"]["labels"] for w in r.workloads()
    }
    for w in r.workloads():
        sel = w["spec"]["selector"]["matchLabels"]
        assert sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for svc in r.of_kind("Service"):
        sel = svc["spec"]["selector"]
        matched = [n for n, labels in pods.items() if sel.items() <= labels.items()]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {matched}"
        workload = r.get(*matched[0].split("/"))
        container_ports = {
            p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{svc['metadata']['name']}: {port}"
    for pdb in r.of_kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert [n for n, labels in pods.items() if sel.items() <= labels.items()], pdb["metadata"]["name"]
    for doc in r.docs:
        assert len(doc["metadata"]["name"]) <= 63
        assert doc["metadata"].get("namespace"), f"{doc['kind']}/{doc['metadata']['name']}: namespace"


# ------------------------------------------- configs: TOML, --check-config, checksum, grace


def _pod_env(r: Rendered, workload: dict, container: dict) -> dict[str, str]:
    """The environment Kubernetes would give the container, from the rendered objects."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        src = e["valueFrom"]
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            value = secret_value(r, ref["name"], ref["key"])
            if value is None:
                assert ref.get("optional"), f"{e['name']}: Secret {ref['name']} has no key {ref['key']}: the pod would not start"
                continue
            env[e["name"]] = value
        elif "fieldRef" in src:
            assert src["fieldRef"]["fieldPath"] == "metadata.name", src
            env[e["name"]] = f"{workload['metadata']['name']}-6b7f9c5d4-x2kqz"
        elif "resourceFieldRef" in src:
            ref = src["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu" and str(ref.get("divisor", "1")) == "1", ref
            limit = str(container["resources"]["limits"]["cpu"])
            cores = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
            env[e["name"]] = str(math.ceil(cores))
        else:
            raise AssertionError(f"unsupported env source {src}")
    return env


def run_as_pod(r: Rendered, component: str, tmp_path: Path, extra_args=(), env_override=None) -> subprocess.CompletedProcess:
    """Starts the container's command the way the kubelet would, with --check-config."""
    workload = r.get("Deployment", f"{RELEASE}-{component}")
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    root = tmp_path / component
    mounts = {}
    for m in container["volumeMounts"]:
        vol = volumes[m["name"]]
        local = root / m["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            for key, text in r.get("ConfigMap", vol["configMap"]["name"])["data"].items():
                (local / key).write_text(text)
        mounts[m["mountPath"]] = str(local)

    def local_path(arg: str) -> str:
        for mount, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if arg == mount or arg.startswith(mount + "/"):
                return local + arg[len(mount):]
        return arg

    command = container["command"]
    binary = BINARIES[command[0]]
    assert binary.exists(), f"{binary} missing: build it with cargo build -p iron-proxy -p iron-control"
    env = {"PATH": "/usr/bin:/bin", **_pod_env(r, workload, container)}
    if env_override is not None:
        env = env_override(env)
    argv = [str(binary), *command[1:], *map(local_path, container.get("args", [])), "--check-config", *extra_args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
@pytest.mark.parametrize("component", ["proxy", "control"])
def test_rendered_config_passes_check_config(values_file, component, tmp_path):
    r = ci_render(values_file)
    result = run_as_pod(r, component, tmp_path)
    assert result.returncode == 0, f"iron-{component} --check-config failed:\n{result.stdout}{result.stderr}"
    assert "configuration OK" in result.stdout


def test_check_config_harness_detects_failures(tmp_path):
    """The same harness fails when the pod's environment is wrong (the check is real)."""
    r = ci_render(CHART / "ci/minimal-values.yaml")
    short = run_as_pod(r, "control", tmp_path, env_override=lambda e: {**e, "IRON_PROXY_SECRET": "short"})
    assert short.returncode != 0 and "IRON_PROXY_SECRET" in short.stderr
    no_secret = run_as_pod(r, "proxy", tmp_path, env_override=lambda e: {k: v for k, v in e.items() if k != "IRON_PROXY_SECRET"})
    assert no_secret.returncode != 0 and "IRON_PROXY_SECRET" in no_secret.stderr
    typo = run_as_pod(r, "proxy", tmp_path, env_override=lambda e: {**e, "IRON_SERVER__LISTNE": "x"})
    assert typo.returncode != 0


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_rendered_toml_matches_values(values_file):
    values = merge(chart().values, load_values(values_file))
    r = ci_render(values_file)
    proxy = tomllib.loads(r.config("proxy"))
    for section, table in values["proxy"]["config"].items():
        for key, value in table.items():
            assert proxy[section][key] == value, f"proxy {section}.{key}"
    assert proxy["budget"]["spill_dir"] == "/var/lib/iron-proxy"
    assert proxy["control"] == {
        "url": f"http://{RELEASE}-control.{NAMESPACE}.svc:{values['control']['service']['port']}",
        "proxy_secret_env": "IRON_PROXY_SECRET",
    }
    control = tomllib.loads(r.config("control"))
    for section, table in values["control"]["config"].items():
        for key, value in table.items():
            assert control[section][key] == value, f"control {section}.{key}"
    assert control["store"] == {"kind": "redis"}


def test_toml_renderer_types():
    """Helm reads YAML numbers as float64: integers must come out as TOML integers."""
    r = render({"proxy": {"config": {"budget": {"lease_usd": "2.5"}, "server": {"threads": 4}}},
                "control": {"config": {"leases": {"min_lease_usd": "0.0001", "ttl_secs": 120},
                                       "security": {"allow_private_upstreams": True}}}})
    proxy = tomllib.loads(r.config("proxy"))
    assert proxy["server"]["threads"] == 4 and isinstance(proxy["server"]["threads"], int)
    assert proxy["server"]["max_request_bytes"] == 33554432
    assert proxy["budget"]["lease_usd"] == "2.5"
    control = tomllib.loads(r.config("control"))
    assert control["leases"] == {"min_lease_usd": "0.0001", "ttl_secs": 120}
    assert control["security"]["allow_private_upstreams"] is True
    assert tomllib.loads(render().config("control"))["leases"] == {}


def checksum(r: Rendered, component: str) -> str:
    return r.get("Deployment", f"{RELEASE}-{component}")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_changes_with_the_config():
    base = render()
    for component in ("proxy", "control"):
        assert re.fullmatch(r"[0-9a-f]{64}", checksum(base, component))
    proxy_change = render({"proxy": {"config": {"upstream": {"connect_timeout_ms": 7000}}}})
    assert checksum(proxy_change, "proxy") != checksum(base, "proxy")
    assert checksum(proxy_change, "control") == checksum(base, "control")
    control_change = render({"control": {"config": {"events": {"retain": 500}}}})
    assert checksum(control_change, "control") != checksum(base, "control")
    assert checksum(control_change, "proxy") == checksum(base, "proxy")
    # The control URL in proxy.toml follows control's Service port.
    assert checksum(render({"control": {"service": {"port": 8070}}}), "proxy") != checksum(base, "proxy")
    # Not config: no rollout.
    unrelated = render({"proxy": {"replicaCount": 5}, "control": {"replicaCount": 4}})
    assert checksum(unrelated, "proxy") == checksum(base, "proxy")
    assert checksum(unrelated, "control") == checksum(base, "control")
    # Deterministic across renders (no random input).
    assert checksum(render({"secrets": {"proxySecret": "x" * 20}}), "proxy") == checksum(base, "proxy")


def grace(r: Rendered) -> int:
    return r.get("Deployment", f"{RELEASE}-proxy")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_termination_grace_exceeds_shutdown_grace(values_file):
    r = ci_render(values_file)
    shutdown = tomllib.loads(r.config("proxy"))["server"]["shutdown_grace_secs"]
    assert grace(r) > shutdown


def test_termination_grace_rules():
    assert grace(render()) == 30 + 15
    assert grace(render({"proxy": {"config": {"server": {"shutdown_grace_secs": 120}}}})) == 135
    r = render({"proxy": {"preStopSleepSeconds": 5}})
    assert grace(r) == 30 + 5 + 15
    assert r.container("Deployment", f"{RELEASE}-proxy", "proxy")["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    validate_object(r.get("Deployment", f"{RELEASE}-proxy"), "1.37.0")
    assert "lifecycle" not in render().container("Deployment", f"{RELEASE}-proxy", "proxy")
    assert grace(render({"proxy": {"terminationGracePeriodSeconds": 31}})) == 31
    msg = render_error({"proxy": {"terminationGracePeriodSeconds": 30}})
    assert "terminationGracePeriodSeconds" in msg and "shutdown_grace_secs" in msg
    render_error({"proxy": {"terminationGracePeriodSeconds": 40, "preStopSleepSeconds": 10}})


# ------------------------------------------------------ observability assets: one source


def test_chart_ships_the_observability_files():
    files = {f["name"] for f in chart().files}
    dashboards = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert dashboards, "charts/iron/dashboards/*.json missing"
    assert {f"dashboards/{d}" for d in dashboards} <= files
    assert "rules/iron-alerts.yaml" in files
    assert not any(f.startswith(("ci/", "rules/tests/")) for f in files), "test files leak into the package"
    # check-observability.sh checks these same directories of this chart.
    script = (CHART / "ci/check-observability.sh").read_text()
    assert 'CHART_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"' in script
    assert 'DASH_DIR="$CHART_DIR/dashboards"' in script and 'RULES_DIR="$CHART_DIR/rules"' in script


def test_dashboards_are_the_chart_files():
    r = ci_render(CHART / "ci/observability-values.yaml")
    cms = [c for c in r.of_kind("ConfigMap") if "dashboard" in c["metadata"]["name"]]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(cms) == len(files)
    by_key = {k: (cm, v) for cm in cms for k, v in cm["data"].items()}
    for f in files:
        cm, data = by_key[f.name]
        assert data == f.read_text().rstrip("\n"), f"{f.name} differs from the shipped file"
        assert json.loads(data) == json.loads(f.read_text())
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Iron"
        assert cm["metadata"]["namespace"] == "monitoring"
    assert not [c for c in render().of_kind("ConfigMap") if "dashboard" in c["metadata"]["name"]]
    custom = render({"dashboards": {"enabled": True, "label": "iron_dash", "labelValue": "yes", "folderAnnotation": ""}})
    cm = next(c for c in custom.of_kind("ConfigMap") if "dashboard" in c["metadata"]["name"])
    assert cm["metadata"]["labels"]["iron_dash"] == "yes" and "annotations" not in cm["metadata"]
    assert cm["metadata"]["namespace"] == NAMESPACE


def test_prometheus_rule_is_the_chart_rule_file():
    r = ci_render(CHART / "ci/observability-values.yaml")
    rule = r.get("PrometheusRule", RELEASE)
    source = yaml.safe_load((CHART / "rules/iron-alerts.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not render().of_kind("PrometheusRule")


def test_service_monitors_scrape_both_components():
    r = ci_render(CHART / "ci/observability-values.yaml")
    jobs = {}
    for sm in r.of_kind("ServiceMonitor"):
        spec = sm["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        services = [s for s in r.of_kind("Service")
                    if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(services) == 1, f"{sm['metadata']['name']} selects {services}"
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
        assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
        job = [x["replacement"] for x in endpoint["relabelings"] if x.get("targetLabel") == "job"]
        jobs[services[0]["metadata"]["name"]] = (job[0], endpoint["port"])
    assert jobs == {f"{RELEASE}-proxy-metrics": ("iron-proxy", "admin"), f"{RELEASE}-control": ("iron-control", "http")}
    # The agents' Service does not expose the admin port.
    assert [p["port"] for p in r.get("Service", f"{RELEASE}-proxy")["spec"]["ports"]] == [8080]
    assert not render().of_kind("ServiceMonitor")


# ------------------------------------------------------------------ unit tests (helm-unittest)


def test_names_follow_the_release():
    r = render(namespace="ns1")
    assert r.has("Deployment", "iron-proxy") and r.has("Deployment", "iron-control")
    other = Rendered(chart().render({}, name="prod", namespace="ns1"))
    assert other.has("Deployment", "prod-iron-proxy")
    assert tomllib.loads(other.get("ConfigMap", "prod-iron-proxy")["data"]["proxy.toml"])["control"]["url"] == \
        "http://prod-iron-control.ns1.svc:7070"
    fixed = render({"fullnameOverride": "gw"})
    assert fixed.has("Deployment", "gw-proxy") and fixed.has("Secret", "gw")


def test_generated_secrets_are_valid_for_iron():
    r = render()
    name = RELEASE
    master = base64.b64decode(secret_value(r, name, "master-key"))
    assert len(master) == 32
    assert len(secret_value(r, name, "proxy-secret")) >= 16
    admin = secret_value(r, name, "bootstrap-admin-key")
    assert admin.startswith("iron_ak_") and len(admin) >= 30
    assert secret_value(r, name, "master-key-previous") is None
    assert r.get("Secret", name)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "annotations" not in render({"secrets": {"keep": False}}).get("Secret", name)["metadata"]


def test_explicit_secrets_are_used_verbatim():
    values = {"secrets": {"masterKey": MASTER_KEY, "masterKeyPrevious": MASTER_KEY, "proxySecret": "p" * 20,
                          "bootstrapAdminKey": "iron_ak_" + "a" * 30}}
    r = render(values)
    assert secret_value(r, RELEASE, "master-key") == MASTER_KEY
    assert secret_value(r, RELEASE, "master-key-previous") == MASTER_KEY
    assert secret_value(r, RELEASE, "proxy-secret") == "p" * 20
    env = env_of(r.container("Deployment", f"{RELEASE}-control", "control"))
    assert env["IRON_MASTER_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"] == {
        "name": RELEASE, "key": "master-key-previous", "optional": True}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_proxy_and_control_share_the_proxy_secret(values_file):
    r = ci_render(values_file)
    envs = {c: _pod_env(r, r.get("Deployment", f"{RELEASE}-{c}"), r.container("Deployment", f"{RELEASE}-{c}", c))
            for c in ("proxy", "control")}
    assert envs["proxy"]["IRON_PROXY_SECRET"] == envs["control"]["IRON_PROXY_SECRET"]


def test_existing_secret():
    values = {"secrets": {"existingSecret": "vault-iron", "keys": {"masterKey": "mk", "proxySecret": "ps"}}}
    r = render(values)
    assert not r.has("Secret", RELEASE)
    control = env_of(r.container("Deployment", f"{RELEASE}-control", "control"))
    assert control["IRON_MASTER_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vault-iron", "key": "mk"}
    assert control["IRON_PROXY_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "vault-iron", "key": "ps"}
    assert control["IRON_BOOTSTRAP_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    proxy = env_of(r.container("Deployment", f"{RELEASE}-proxy", "proxy"))
    assert proxy["IRON_PROXY_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "vault-iron", "key": "ps"}
    assert "vault-iron" in r.notes
    assert "existingSecret" in render_error({"secrets": {"existingSecret": "x", "proxySecret": "p" * 20}})


def test_redis_bundled():
    r = render()
    sts = r.get("StatefulSet", f"{RELEASE}-redis")
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "noeviction" in args and "--requirepass" in args
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    url = secret_value(r, f"{RELEASE}-redis", "redis-url")
    password = secret_value(r, f"{RELEASE}-redis", "redis-password")
    assert url == f"redis://:{password}@{RELEASE}-redis.{NAMESPACE}.svc:6379"
    env = env_of(r.container("Deployment", f"{RELEASE}-control", "control"))
    assert env["IRON_STORE__URL"]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-redis", "key": "redis-url"}
    assert "bundled single-node" in r.notes
    plain = render({"redis": {"bundled": {"auth": {"enabled": False}, "persistence": {"enabled": False}, "maxmemory": "200mb"}}})
    sts = plain.get("StatefulSet", f"{RELEASE}-redis")
    assert "--requirepass" not in sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "200mb" in sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert secret_value(plain, f"{RELEASE}-redis", "redis-url") == f"redis://{RELEASE}-redis.{NAMESPACE}.svc:6379"


def test_redis_external():
    r = render({"redis": {"url": "rediss://:pw@redis.example:6380", "bundled": {"enabled": False}}})
    assert not r.of_kind("StatefulSet")
    assert secret_value(r, f"{RELEASE}-redis", "redis-url") == "rediss://:pw@redis.example:6380"
    assert "bundled" not in r.notes
    r = render({"redis": {"existingSecret": "db", "existingSecretKey": "u", "bundled": {"enabled": False}}})
    assert not r.has("Secret", f"{RELEASE}-redis") and not r.of_kind("StatefulSet")
    env = env_of(r.container("Deployment", f"{RELEASE}-control", "control"))
    assert env["IRON_STORE__URL"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "u"}


def test_redis_choice_is_explicit():
    assert "exclusive" in render_error({"redis": {"url": "redis://r:6379"}})
    assert "redis.bundled.enabled=true" in render_error({"redis": {"bundled": {"enabled": False}}})
    assert "not both" in render_error({"redis": {"url": "redis://r:6379", "existingSecret": "x", "bundled": {"enabled": False}}})


def test_proxy_environment():
    proxy = env_of(render().container("Deployment", f"{RELEASE}-proxy", "proxy"))
    assert proxy["IRON_BUDGET__PROXY_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert proxy["IRON_SERVER__THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    explicit = env_of(render({"proxy": {"config": {"server": {"threads": 3}}}}).container("Deployment", f"{RELEASE}-proxy", "proxy"))
    assert "IRON_SERVER__THREADS" not in explicit
    off = env_of(render({"proxy": {"threadsFromCpuLimit": False}}).container("Deployment", f"{RELEASE}-proxy", "proxy"))
    assert "IRON_SERVER__THREADS" not in off
    extra = render({"proxy": {"extraEnv": [{"name": "RUST_LOG", "value": "debug"}]}})
    assert env_of(extra.container("Deployment", f"{RELEASE}-proxy", "proxy"))["RUST_LOG"]["value"] == "debug"


def test_spill_dir_volume():
    r = render()
    pod = r.get("Deployment", f"{RELEASE}-proxy")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "spill")
    assert mount["mountPath"] == tomllib.loads(r.config("proxy"))["budget"]["spill_dir"]
    assert next(v for v in pod["volumes"] if v["name"] == "spill") == {"name": "spill", "emptyDir": {"sizeLimit": "1Gi"}}
    pvc = {"persistentVolumeClaim": {"claimName": "iron-spill"}}
    pod = render({"proxy": {"spill": {"volume": pvc}}}).get("Deployment", f"{RELEASE}-proxy")["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "spill") == {"name": "spill", **pvc}


def test_autoscaling_and_disruption_budgets():
    r = ci_render(CHART / "ci/ha-values.yaml")
    deployment = r.get("Deployment", f"{RELEASE}-proxy")
    assert "replicas" not in deployment["spec"]
    hpa = r.get("HorizontalPodAutoscaler", f"{RELEASE}-proxy")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-proxy"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    for component in ("proxy", "control"):
        assert r.get("PodDisruptionBudget", f"{RELEASE}-{component}")["spec"]["minAvailable"] == 2
    assert r.get("Deployment", f"{RELEASE}-control")["spec"]["replicas"] == 3
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    base = render()
    assert base.get("Deployment", f"{RELEASE}-proxy")["spec"]["replicas"] == 2
    assert base.get("Deployment", f"{RELEASE}-control")["spec"]["replicas"] >= 2
    assert not base.of_kind("HorizontalPodAutoscaler")
    assert base.get("PodDisruptionBudget", f"{RELEASE}-proxy")["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": {
            "app.kubernetes.io/name": "iron", "app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "proxy"}}}
    off = render({"proxy": {"podDisruptionBudget": {"enabled": False}}, "control": {"podDisruptionBudget": {"enabled": False}}})
    assert not off.of_kind("PodDisruptionBudget")
    assert "minReplicas" in render_error({"proxy": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}})


def test_network_policies():
    r = ci_render(CHART / "ci/observability-values.yaml")
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in r.workloads()}

    def selects(selector: dict) -> set[str]:
        return {n for n, labels in pods.items() if selector["matchLabels"].items() <= labels.items()}

    policies = {p["metadata"]["name"]: p["spec"] for p in r.of_kind("NetworkPolicy")}
    assert {selects(s["podSelector"]).pop() for s in policies.values()} == set(pods)
    redis = policies[f"{RELEASE}-redis"]
    assert redis["egress"] == []
    (rule,) = redis["ingress"]
    assert [selects(f["podSelector"]) for f in rule["from"]] == [{f"{RELEASE}-control"}]
    proxy = policies[f"{RELEASE}-proxy"]
    to_control = [e for e in proxy["egress"] if any("podSelector" in t for t in e.get("to", []))]
    assert selects(to_control[0]["to"][0]["podSelector"]) == {f"{RELEASE}-control"}
    assert to_control[0]["ports"] == [{"port": 7070, "protocol": "TCP"}]
    assert any(p["port"] == 53 for e in proxy["egress"] for p in e.get("ports", []))
    assert any(p["port"] == 443 for e in proxy["egress"] for p in e.get("ports", []))
    assert any(p["port"] == 4318 for e in proxy["egress"] for p in e.get("ports", []))
    metrics = [i for i in proxy["ingress"] if i["ports"][0]["port"] == "admin"]
    assert metrics[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    agents = [i for i in proxy["ingress"] if i["ports"][0]["port"] == "http"]
    assert "from" not in agents[0], "agents may come from anywhere by default"
    control = policies[f"{RELEASE}-control"]
    assert selects(control["ingress"][0]["from"][0]["podSelector"]) == {f"{RELEASE}-proxy"}
    external = render({"networkPolicy": {"enabled": True}, "redis": {"url": "redis://r:6379", "bundled": {"enabled": False}}})
    control = next(p["spec"] for p in external.of_kind("NetworkPolicy") if p["metadata"]["name"] == f"{RELEASE}-control")
    assert any(p["port"] == 6379 for e in control["egress"] for p in e.get("ports", []))
    assert not render().of_kind("NetworkPolicy")


def test_notes_explain_tokens_and_base_url():
    notes = render().notes
    assert f"export OPENAI_BASE_URL=http://{RELEASE}-proxy.{NAMESPACE}.svc:8080/v1" in notes
    assert "iron token mint --project" in notes
    assert f"kubectl -n {NAMESPACE} get secret {RELEASE}" in notes and "bootstrap-admin-key" in notes
    assert f"svc/{RELEASE}-control" in notes
    lb = render({"proxy": {"service": {"type": "LoadBalancer", "port": 80}}}).notes
    assert "loadBalancer.ingress" in lb and f"{RELEASE}-proxy.{NAMESPACE}.svc:80/v1" in lb


def test_image_reference():
    r = render()
    assert r.container("Deployment", f"{RELEASE}-proxy", "proxy")["image"] == f"ghcr.io/iron-gateway/iron:{chart().metadata['appVersion']}"
    digest = "sha256:" + "a" * 64
    r = render({"image": {"repository": "reg.example/iron", "tag": "1.2.3", "digest": digest}})
    assert r.container("Deployment", f"{RELEASE}-control", "control")["image"] == f"reg.example/iron@{digest}"
    assert r.container("Deployment", f"{RELEASE}-proxy", "proxy")["command"] == ["iron-proxy"]
    assert r.container("Deployment", f"{RELEASE}-control", "control")["command"] == ["iron-control"]


# ------------------------------------------------------------------------------ docs


def _slugs(markdown: str) -> set[str]:
    """GitHub heading anchors."""
    slugs, seen, fenced = set(), {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"`|\*|\[|\]\([^)]*\)", "", m.group(1))
            slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def test_docs_links_resolve():
    ops = (REPO / "docs/operations.md").read_text()
    for section in ("Install on Kubernetes", "Upgrade", "Scaling", "Redis", "Secrets and rotation",
                    "Master key", "Proxy secret", "Admin API keys", "Runbooks", "Metrics, dashboards and alerts"):
        assert re.search(rf"^#+ {re.escape(section)}$", ops, re.M), f"docs/operations.md: section {section!r} missing"
    assert "rotate-master-key" in ops and "IRON_MASTER_KEY_PREVIOUS" in ops
    for doc in (REPO / "docs/operations.md", CHART / "README.md"):
        text = doc.read_text()
        slugs = _slugs(text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            if path:
                assert (doc.parent / path).exists(), f"{doc.name}: broken link {target}"
            elif anchor:
                assert anchor in slugs, f"{doc.name}: broken anchor #{anchor}"


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_builds_what_the_chart_runs():
    """Static checks of /Dockerfile (no container engine here): BuildKit's own parser."""
    import dockerfile

    instructions = dockerfile.parse_file(str(REPO / "Dockerfile"))
    stages = [i for i in instructions if i.cmd == "FROM"]
    assert len(stages) >= 3, "multi-stage: dashboard, build, runtime"
    runtime = instructions[instructions.index(stages[-1]):]
    assert "distroless" in stages[-1].value[0] and stages[-1].value[0].endswith(":nonroot")
    (user,) = [i.value[0] for i in runtime if i.cmd == "USER"]
    uid = int(user.split(":")[0])
    defaults = chart().values
    assert uid != 0 and uid == defaults["securityContext"]["runAsUser"] == defaults["podSecurityContext"]["runAsUser"]
    exposed = {int(p) for i in runtime if i.cmd == "EXPOSE" for p in i.value}
    assert exposed == {8080, 9090, 7070}
    assert not [i for i in runtime if i.cmd == "ENTRYPOINT"], "the chart sets command: no entrypoint"

    # cargo builds packages of this workspace, and their binaries are what the chart runs.
    build = " ".join(v for i in instructions if i.cmd == "RUN" for v in i.value if "cargo build" in v)
    packages = re.findall(r"-p ([\w-]+)", build)
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    bins = set()
    for member in workspace:
        manifest = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        if manifest["package"]["name"] in packages:
            bins |= {b["name"] for b in manifest.get("bin", [])} or {manifest["package"]["name"]}
    assert len(packages) == 3 and bins == {"iron-proxy", "iron-control", "iron"}, (packages, bins)
    for b in bins:
        assert f"target/release/{b}" in build
    commands = {render().container("Deployment", f"{RELEASE}-{c}", c)["command"][0] for c in ("proxy", "control")}
    assert commands <= bins

    # Every COPY from the build context has a source that is not ignored.
    ignored = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for keep in ("Cargo.toml", "Cargo.lock", *workspace):
        assert keep not in ignored, f".dockerignore excludes {keep}"
    for i in instructions:
        if i.cmd == "COPY" and not any(f.startswith("--from=") for f in i.flags):
            sources = i.value[:-1]
            assert any(s == "." or (REPO / s).exists() for s in sources), f"COPY {sources}: nothing to copy"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
