"""The Lambda asset: deploy bundles Lambda-platform wheels with the local pip (no Docker); synth in
tests stages the source folder and never bundles."""

import subprocess
from pathlib import Path

from aws_cdk import App, Stack

from infra.lambda_code import LAMBDA_SOURCE, _PipWheelBundler, lambda_code


def test_bundler_installs_lambda_platform_wheels_and_copies_the_package(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv))
    assert _PipWheelBundler(LAMBDA_SOURCE).try_bundle(str(tmp_path)) is True
    (argv,) = calls
    assert argv[1:4] == ["-m", "pip", "install"]
    assert argv[argv.index("--platform") + 1] == "manylinux2014_aarch64"
    assert "--only-binary=:all:" in argv and argv[argv.index("--target") + 1] == str(tmp_path)
    assert argv[argv.index("-r") + 1] == str(LAMBDA_SOURCE / "requirements.txt")
    assert (tmp_path / "rdsbackup_lambdas" / "handlers" / "create_snapshot.py").exists()
    assert not list(Path(tmp_path).rglob("__pycache__"))


def _synth_with_function(outdir: Path, context: dict) -> None:
    from aws_cdk import aws_lambda as lambda_

    app = App(context=context, outdir=str(outdir))
    stack = Stack(app, "S")
    lambda_.Function(stack, "F", runtime=lambda_.Runtime.PYTHON_3_13, handler="x.handler", code=lambda_code(stack))
    app.synth()


def test_synth_bundles_by_default_and_not_when_told(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv))
    _synth_with_function(tmp_path / "skip", {"rdsbackup:bundle": "false"})
    assert calls == []
    _synth_with_function(tmp_path / "bundle", {})
    assert len(calls) == 1 and "--platform" in calls[0]


def test_files_generated_at_synth_are_in_the_package(tmp_path):
    from aws_cdk import aws_lambda as lambda_

    app = App(context={"rdsbackup:bundle": "false"}, outdir=str(tmp_path))
    stack = Stack(app, "S")
    code = lambda_code(stack, files={"rdsbackup_policies.json": '{"demo": {}}'})
    lambda_.Function(stack, "F", runtime=lambda_.Runtime.PYTHON_3_13, handler="x.handler", code=code)
    app.synth()
    (package,) = [p for p in tmp_path.glob("asset.*") if p.is_dir()]
    assert (package / "rdsbackup_policies.json").read_text() == '{"demo": {}}'
    assert (package / "rdsbackup_lambdas" / "handlers" / "resolve_policy.py").exists()


REQUIREMENTS = LAMBDA_SOURCE / "requirements.txt"


def _pins() -> dict[str, str]:
    """The asset's requirements, name (normalized) -> pinned version."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_normalized(name.split("[", 1)[0])] = version
    return pins


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def test_the_asset_bundles_the_sdk_it_runs_with_as_a_consistent_pair():
    """aws-xray-sdk (powertools' tracer) pulls botocore in: unpinned, the asset carried the newest botocore,
    which shadows the runtime's own under the runtime's boto3. Both are pinned, to the versions the tests
    run with, and the botocore pin is one the pinned boto3 accepts."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    pins = _pins()
    assert all(pins.values()), f"every requirement of {REQUIREMENTS} is pinned (==): {pins}"
    assert version("boto3") == pins["boto3"] and version("botocore") == pins["botocore"]
    (botocore,) = [Requirement(r) for r in requires("boto3") if Requirement(r).name == "botocore" and not
                   Requirement(r).marker]
    assert botocore.specifier.contains(pins["botocore"]), (botocore, pins["botocore"])


def _imports(path: Path, package_root: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved within its package)."""
    import ast

    found = set()
    package = path.relative_to(package_root.parent).with_suffix("").parts[:-1]
    tree = ast.parse(path.read_text())
    # an import under `try: ... except ImportError:` is optional (fastcdc: the Lambdas never chunk)
    optional = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
                and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                        for h in node.handlers)
                for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_every_package_the_lambda_code_imports_is_in_the_asset():
    """The handlers and the worker modules they import (archive retrieval, the S3 owner hook) need nothing
    but the standard library and what lambdas/requirements.txt installs (pydantic was missing)."""
    import sys
    from importlib.metadata import packages_distributions, requires

    from packaging.requirements import Requirement

    from infra.lambda_code import WORKER_PACKAGE

    roots = {"rdsbackup_lambdas": LAMBDA_SOURCE / "rdsbackup_lambdas", "rdsbackup": WORKER_PACKAGE}
    pending = [path for path in roots["rdsbackup_lambdas"].rglob("*.py")]
    seen: set[Path] = set()
    third_party: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        root = next(r for r in roots.values() if r in path.parents)
        for module in _imports(path, root):
            top, *rest = module.split(".")
            if top in roots:
                for depth in range(len(rest), -1, -1):  # the module itself, else its package
                    base = roots[top].joinpath(*rest[:depth])
                    candidate = next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.exists()), None)
                    if candidate is not None:
                        pending.append(candidate)
                        break
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    assert any(WORKER_PACKAGE in path.parents for path in seen), "the walk follows the Lambdas into the worker"

    # what pip installs from the requirements: each requirement with its extras, and theirs, recursively
    bundled: set[str] = set()
    wanted = [Requirement(line.split("#", 1)[0]) for line in REQUIREMENTS.read_text().splitlines()
              if line.split("#", 1)[0].strip()]
    while wanted:
        requirement = wanted.pop()
        name = _normalized(requirement.name)
        if name in bundled:
            continue
        bundled.add(name)
        for dependency in map(Requirement, requires(name) or []):
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra})
                                                for extra in {"", *requirement.extras}):
                wanted.append(dependency)
    providers = packages_distributions()
    missing = {module: providers.get(module, [module]) for module in sorted(third_party)
               if not {_normalized(d) for d in providers.get(module, [module])} & bundled}
    assert not missing, f"imported by the Lambda code but not installed by {REQUIREMENTS}: {missing}"
