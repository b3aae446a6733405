"""Renders charts/pbs-cloud with helm-python-sdk (the Helm 4 SDK, no helm binary), lints it,
checks values.schema.json accepts the defaults and refuses bad values, and validates every
rendered manifest and CRD against the Kubernetes 1.33 schemas (kubernetes-validate, strict).
Run through e2e/kube/test-chart.sh, which prepares the virtualenv."""

import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pbs-cloud"
KUBE = "1.33.0"
results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        results["failed"] += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
    else:
        results["passed"] += 1
        print(f"ok   {name}")


def docs(manifests):
    out = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def validate_all(items):
    assert items, "nothing rendered"
    for path, doc in items:
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            assert doc["kind"] == "ServiceMonitor"
            assert doc["spec"]["endpoints"][0]["port"] == "metrics"
            continue
        kubernetes_validate.validate(doc, KUBE, strict=True)


chart = helm.Chart.load(CHART)
FULL = {
    "watchNamespace": "tenants",
    "replicaCount": 2,
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "networkPolicy": {"enabled": True, "metricsNamespaceSelector": {"matchLabels": {"name": "monitoring"}}},
}


def test_schema_defaults():
    chart.validate_schema(None)
    chart.validate_schema(FULL)


def test_schema_refuses_bad_values():
    for bad in ({"replicaCount": 0}, {"unknownKey": 1}, {"image": {"pullPolicy": "Sometimes"}},
                {"watchNamespace": "Not_A_Namespace"}, {"logLevel": "loud"},
                {"replicaCount": 2, "leaderElection": {"enabled": False}}):
        try:
            chart.validate_schema(bad)
        except helm.HelmError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_lint():
    report = helm.lint(CHART, strict=True, kube_version="v1.33.0")
    errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    assert not errors and not report.get("errors"), report


def test_render_defaults_validates():
    items = docs(chart.render(None, name="pbs-cloud", namespace="pbs-cloud-system"))
    validate_all(items)
    kinds = sorted(d["kind"] for _, d in items)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                     "Service", "ServiceAccount"], kinds
    deploy = next(d for _, d in items if d["kind"] == "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "--leader-elect" in c["args"]
    assert "--lease-duration=15" in c["args"] and "--renew-deadline=10" in c["args"], c["args"]
    assert c["image"] == "ghcr.io/pbs-cloud/pbs-cloud-operator:0.1.0"
    # helm upgrade: the new pod is ready as a follower, then the old one stops and releases
    # the Lease; a surge pod and no unavailable one keep that from hanging.
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_without_leader_election_pods_never_overlap():
    items = docs(chart.render({"leaderElection": {"enabled": False}}, name="pbs-cloud",
                              namespace="pbs-cloud-system"))
    validate_all(items)
    deploy = next(d for _, d in items if d["kind"] == "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}, deploy["spec"]["strategy"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--leader-elect") for a in args), args


def test_render_full_validates():
    items = docs(chart.render(FULL, name="pbs-cloud", namespace="pbs-cloud-system"))
    validate_all(items)
    kinds = {d["kind"] for _, d in items}
    assert {"ServiceMonitor", "NetworkPolicy"} <= kinds, kinds
    assert "ClusterRole" not in kinds, "watchNamespace gives a namespaced Role"
    role = next(d for _, d in items if d["kind"] == "Role" and d["metadata"]["namespace"] == "tenants")
    assert role["rules"]


def test_rbac_least_privilege():
    items = docs(chart.render(None, name="pbs-cloud", namespace="pbs-cloud-system"))
    for _, d in items:
        for rule in d.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (d["kind"], rule)
            assert "pods" not in rule["resources"] and "nodes" not in rule["resources"], rule
            if "secrets" in rule["resources"]:
                assert "delete" not in rule["verbs"], rule


def test_crds_validate_and_match_crds_dir():
    crds = chart.crds
    assert len(crds) == 5, [c.get("name") for c in crds]
    for path in sorted((CHART / "crds").glob("*.yaml")):
        text = path.read_text()
        assert text == (ROOT / "crds" / path.name).read_text(), f"{path.name} differs from crds/"
        kubernetes_validate.validate(yaml.safe_load(text), KUBE, strict=True)


def test_examples_validate():
    for path in sorted((ROOT / "examples" / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"] in ("v1",):
                kubernetes_validate.validate(doc, KUBE, strict=True)


for name, fn in list(globals().items()):
    if name.startswith("test_") and callable(fn):
        check(name, fn)
print(f"chart: {results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
