"""Checks the deployment files offline (run by scripts/test-deploy).

The Kubernetes manifests of deploy/kubernetes/ are validated against the Kubernetes API's
JSON Schemas (kubernetes-validate, strict: an unknown field is an error) for the oldest
and the newest version they are meant for, and checked to fit together (the names one
resource gives another). The Containerfile is parsed with BuildKit's own parser and
checked for what a build would trip on. Given a sandcell binary, it then starts sandcell
as a pod of the StatefulSet does (pod_start.py). Every check prints one line; a check that cannot
run says so loudly and counts as skipped. The last line is the count.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
from pod_start import check_pod_start
import kubernetes_validate
import yaml

# The oldest Kubernetes whose schema has every field the manifests use (the container's
# `appArmorProfile` came in 1.30), and the newest this kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# Every instruction BuildKit knows (its parser itself accepts any word as one).
INSTRUCTIONS = {name.upper() for name in dockerfile.all_cmds()}


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, name, problems):
        """One check: `problems` is the list of what is wrong (empty: it passed)."""
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"     {problem}")
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, name, why):
        self.skipped += 1
        print(f"SKIPPED {name}: {why}", file=sys.stderr)


def load_documents(path):
    """The YAML documents of one file, or the parse error as a problem."""
    try:
        with open(path, encoding="utf-8") as stream:
            return [doc for doc in yaml.safe_load_all(stream) if doc is not None], []
    except yaml.YAMLError as error:
        return [], [f"{path.name} is not valid YAML: {error}"]


def schema_problems(source, documents):
    problems = []
    for doc in documents:
        if not isinstance(doc, dict):
            problems.append(f"{source}: a document is not a mapping")
            continue
        what = f"{source}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                at = ".".join(str(part) for part in error.path)
                problems.append(f"{what} (Kubernetes {version}) at {at or 'top'}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(
                    f"{what}: Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}"
                )
    return problems


def by_kind(documents, kind):
    return {doc["metadata"]["name"]: doc for doc in documents if doc.get("kind") == kind}


def wiring_problems(documents):
    """The names the resources give each other resolve, and the probes ask /healthz."""
    problems = []
    services = by_kind(documents, "Service")
    secrets = by_kind(documents, "Secret")
    statefulsets = by_kind(documents, "StatefulSet")
    if not statefulsets:
        return ["there is no StatefulSet"]
    for name, sts in statefulsets.items():
        spec = sts["spec"]
        pod = spec["template"]
        labels = pod["metadata"].get("labels", {})
        selector = spec["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"StatefulSet {name}: its selector does not match its pods' labels")
        governing = services.get(spec.get("serviceName"))
        if governing is None:
            problems.append(f"StatefulSet {name}: serviceName {spec.get('serviceName')!r} is not a Service here")
        elif governing["spec"].get("clusterIP") != "None":
            problems.append(f"StatefulSet {name}: its Service {governing['metadata']['name']} is not headless")
        volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        for container in pod["spec"].get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"StatefulSet {name}, init container {container['name']}: volume {mount['name']!r} is not defined")
        for container in pod["spec"]["containers"]:
            where = f"StatefulSet {name}, container {container['name']}"
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (container.get(probe) or {}).get("httpGet")
                if get is None:
                    problems.append(f"{where}: no HTTP {probe}")
                    continue
                if get.get("path") != "/healthz":
                    problems.append(f"{where}: {probe} asks {get.get('path')!r}, not /healthz")
                if get.get("port") not in ports:
                    problems.append(f"{where}: {probe} port {get.get('port')!r} is not a port of the container")
            for env_from in container.get("envFrom", []):
                ref = env_from.get("secretRef")
                if ref and ref["name"] not in secrets and not ref.get("optional"):
                    problems.append(f"{where}: Secret {ref['name']!r} is not here")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}: volume {mount['name']!r} is not defined")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    problems.append(f"{where}: resources.{part} lacks cpu or memory")
        for service in services.values():
            chosen = service["spec"].get("selector", {})
            if any(labels.get(k) != v for k, v in chosen.items()):
                problems.append(f"Service {service['metadata']['name']} selects no pod of StatefulSet {name}")
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort")
                names = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
                if isinstance(target, str) and target not in names:
                    problems.append(f"Service {service['metadata']['name']}: targetPort {target!r} is no container port")
    return problems


def wired(documents):
    """`wiring_problems`, or one problem when the resources lack what it looks at (the
    schema checks say what)."""
    try:
        return wiring_problems(documents)
    except (KeyError, TypeError, AttributeError) as error:
        return [f"a resource lacks a field the others are checked by: {error!r}"]


def check_manifests(checks, directory):
    kustomization, problems = load_documents(directory / "kustomization.yaml")
    checks.check("kustomization.yaml parses", problems)
    listed = (kustomization[0].get("resources", []) if kustomization else [])
    present = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    checks.check(
        "kustomization.yaml lists every manifest of the directory, and only those",
        [f"{name} is not listed" for name in present if name not in listed]
        + [f"{name} is listed but missing" for name in listed if name not in present],
    )
    documents = []
    for name in present:
        docs, problems = load_documents(directory / name)
        problems += schema_problems(name, docs)
        checks.check(f"{name} is valid against Kubernetes {' and '.join(KUBERNETES_VERSIONS)} (strict)", problems)
        documents += docs
    checks.check("the resources refer to each other by names that exist", wired(documents))

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        checks.skip("kustomize rendering", "kubectl is not installed: the kustomization itself was not built (each manifest was still validated)")
        return
    rendered = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if rendered.returncode != 0:
        checks.check("kubectl kustomize builds the directory", [rendered.stderr.strip()])
        return
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc is not None]
    checks.check(
        "the kustomization's output is valid and wired together",
        schema_problems("kubectl kustomize", docs) + wired(docs),
    )


def check_containerfile(checks, root):
    path = root / "Containerfile"
    try:
        commands = dockerfile.parse_file(str(path))
    except (dockerfile.GoParseError, dockerfile.GoIOError) as error:
        checks.check("Containerfile parses", [str(error)])
        return
    checks.check("Containerfile parses", [] if commands else ["it has no instruction"])

    problems = [
        f"line {c.start_line}: unknown instruction {c.cmd}"
        for c in commands
        if c.cmd.upper() not in INSTRUCTIONS
    ]
    first = next((c for c in commands if c.cmd.upper() != "ARG"), None)
    if first is None or first.cmd.upper() != "FROM":
        problems.append("the first instruction (after ARG) is not FROM")
    stages = []
    for c in commands:
        cmd = c.cmd.upper()
        if cmd == "FROM":
            value = [v for v in c.value if v]
            if len(value) == 3 and value[1].upper() == "AS":
                stages.append(value[2].lower())
            elif len(value) != 1:
                problems.append(f"line {c.start_line}: FROM IMAGE [AS NAME] expected")
        elif cmd in ("COPY", "ADD"):
            source_stage = next((f.split("=", 1)[1] for f in c.flags if f.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage.lower() not in stages:
                    problems.append(f"line {c.start_line}: --from={source_stage} is not an earlier stage")
            else:
                for source in c.value[:-1]:
                    if source != "." and not (root / source).exists():
                        problems.append(f"line {c.start_line}: {source} is not in the repository")
        elif cmd in ("ENTRYPOINT", "CMD") and not c.json:
            problems.append(f"line {c.start_line}: {cmd} in shell form (signals would go to a shell)")
    if not stages or not any(c.cmd.upper() == "ENTRYPOINT" for c in commands):
        problems.append("no named stage, or no ENTRYPOINT")
    checks.check("Containerfile instructions, stages and sources are sound", problems)

    entrypoint = root / "deploy/container/entrypoint"
    syntax = subprocess.run(["sh", "-n", str(entrypoint)], capture_output=True, text=True, check=False)
    checks.check(
        "the image's entry point script is valid sh",
        [syntax.stderr.strip() or "sh -n failed"] if syntax.returncode != 0 else [],
    )


def main():
    root = Path(sys.argv[1]).resolve()
    binary = str(Path(sys.argv[2]).resolve()) if len(sys.argv) > 2 else None
    checks = Checks()
    check_manifests(checks, root / "deploy/kubernetes")
    check_containerfile(checks, root)
    if binary is None:
        checks.skip("starting sandcell as the pod does", "no sandcell binary was given")
    else:
        check_pod_start(checks, root, binary)
    summary = f"{checks.passed} passed, {checks.failed} failed"
    if checks.skipped:
        summary += f", {checks.skipped} skipped"
    print(f"test-deploy: {summary}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
