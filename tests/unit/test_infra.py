"""infra/ and docs/deploy.md against the code: every file parses, every ganzoo command and flag they
name exists, and the pins, entrypoints and secrets handling agree with pyproject.toml and the flow.

No network, no docker, no cluster: what needs those is listed in docs/deploy.md as unchecked.
"""

from __future__ import annotations

import copy
import inspect
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import typer
import yaml

from components.cli import app

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# `ganzoo WORD` as a command: not part of a longer token (ganzoo:0.1.0, s3://ganzoo/, ganzoo-s3),
# optionally run as .venv/bin/ganzoo. The command's arguments end at a shell or prose boundary.
INVOCATION = re.compile(r"(?:(?<=bin/)|(?<![\w.:/@-]))ganzoo(?![\w.:/@-])[ \t]+([a-z][\w-]*)([^\n`|;#),]*)")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|(?:^|_)USER$")
VAR_REF = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


def _text_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file()] + [DEPLOY_DOC]
    return sorted(files)


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def _load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path}: expected one YAML document"
    return docs[0]


def _pinned_torch() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1] for d in deps if d.replace(" ", "").startswith("torch==")]
    assert pins, "pyproject.toml: torch is not pinned with =="
    return pins[0]


def _invocations() -> list[tuple[str, str, list[str]]]:
    """(where, command, args) for every `ganzoo COMMAND ...` in infra/ and docs/deploy.md."""
    found = []
    for path in _text_files():
        text = path.read_text().replace("\\\n", " ")  # shell line continuations
        for match in INVOCATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1), shlex.split(match.group(2))))
    return found


def _registered() -> set[str]:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    return commands | {g.name for g in app.registered_groups}  # `jobs` is a sub-app: jobs status|logs|stop


def _check_invocation(where: str, name: str, args: list[str]) -> None:
    assert name in _registered(), f"{where}: `ganzoo {name}` is not a ganzoo command"
    if not args:  # a bare `ganzoo submit` in prose names the command; only its name is checked
        return
    command, args = typer.main.get_command(app).commands[name], list(args)
    while hasattr(command, "list_commands"):  # a group: descend into the subcommand the args name
        assert args and args[0] in command.commands, f"{where}: `ganzoo {name} {shlex.join(args)}`: no subcommand"
        name, command, args = f"{name} {args[0]}", command.commands[args[0]], args[1:]
    try:  # parses every option and argument as the CLI would, without running the command
        command.make_context(name, args, resilient_parsing=False)
    except Exception as exc:  # typer may vendor click: its usage errors are not click.ClickException
        if not hasattr(exc, "format_message"):
            raise
        pytest.fail(f"{where}: `ganzoo {name} {shlex.join(args)}`: {exc.format_message()}")


def _image_name() -> str:
    match = re.search(r'^LABEL .*image\.ref\.name="([^"]+)"', (INFRA / "docker" / "Dockerfile").read_text(), re.M)
    assert match, "infra/docker/Dockerfile: no LABEL org.opencontainers.image.ref.name naming the image"
    return match.group(1)


def _walk(node, key=""):
    """(key, string value) for every string in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    elif isinstance(node, str):
        yield key, node


def _containers(pod_spec_holder: dict) -> list[dict]:
    groups = [pod_spec_holder["headGroupSpec"], *pod_spec_holder.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# ---------------------------------------------------------------- every file


def test_every_yaml_file_parses():
    files = _yaml_files()
    assert len(files) >= 5, files
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path}: empty"


def test_every_ganzoo_command_and_flag_exists():
    invocations = _invocations()
    where = {w.split(":")[0] for w, _, _ in invocations}
    assert "docs/deploy.md" in where and len(invocations) >= 10, invocations
    for inv in invocations:
        _check_invocation(*inv)


def test_command_checker_rejects_typos():
    with pytest.raises(AssertionError, match="not a ganzoo command"):
        _check_invocation("here", "rn", [])
    with pytest.raises(pytest.fail.Exception, match="--ray-adress"):
        _check_invocation("here", "run", ["--ray-adress", "auto"])
    assert [(c, a) for _, c, a in [("x", *m.groups()) for m in INVOCATION.finditer(
        "`.venv/bin/ganzoo run --family dcgan` and ganzoo:0.1.0, s3://ganzoo/runs, ganzoo-s3")]] == \
        [("run", " --family dcgan")]


def test_infra_paths_named_in_the_docs_exist():
    text = DEPLOY_DOC.read_text() + (INFRA / "README.md").read_text()
    for path in set(re.findall(r"\binfra/[\w./-]*[\w/]", text)):
        if path != "infra/.env":  # made by the reader from infra/.env.example
            assert (ROOT / path).exists(), f"docs name {path}, which does not exist"


# ---------------------------------------------------------------- Prefect


def test_prefect_deployment_matches_the_flow():
    from prefect.cli.deploy._models import PrefectYamlModel

    config = PrefectYamlModel.model_validate(_load(INFRA / "prefect" / "prefect.yaml"))
    (deployment,) = [d for d in config.deployments if d.name == "retrain"]
    path, function = deployment.entrypoint.split(":")
    assert (ROOT / path).is_file(), f"prefect.yaml: entrypoint file {path} does not exist"
    assert path == "flows/retrain.py" and function == "retrain"

    import flows.retrain

    flow = getattr(flows.retrain, function)
    accepted = inspect.signature(flow.fn).parameters
    assert set(deployment.parameters) <= set(accepted), (deployment.parameters, list(accepted))
    assert {"params_path", "families"} <= set(deployment.parameters)
    assert deployment.work_pool.name == "ganzoo"
    assert [s.cron for s in deployment.schedules] == ["0 3 * * 0"]


# ---------------------------------------------------------------- Docker


def test_dockerfile_installs_pinned_torch_then_the_project():
    text = (INFRA / "docker" / "Dockerfile").read_text()
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    torch_runs = [i for i, r in enumerate(runs) if re.search(r"pip install .*\btorch==", r)]
    assert torch_runs, "Dockerfile: no `pip install torch==...`"
    assert re.search(r"\btorch==([\w.]+)", runs[torch_runs[0]]).group(1) == _pinned_torch()
    project_runs = [i for i, r in enumerate(runs) if re.search(r"pip install (-e )?\.(\s|$|\[)", r)]
    assert project_runs and project_runs[0] > torch_runs[0], "Dockerfile: `pip install .` must follow torch"
    assert re.search(r"^COPY pyproject\.toml", text, re.M)
    assert re.search(r'^ENTRYPOINT \["ganzoo"\]', text, re.M)
    assert re.search(r"^FROM nvidia/cuda:", text, re.M)


def test_makefile_and_infra_pin_the_same_torch():
    assert f"torch=={_pinned_torch()}" in (ROOT / "Makefile").read_text()


# ---------------------------------------------------------------- compose


def test_compose_has_the_team_stack():
    compose = _load(INFRA / "compose.yaml")
    services = compose["services"]
    assert {"mlflow", "postgres", "minio", "prefect", "ray-head"} <= set(services)
    published = {int(str(p).split(":")[-2]) for s in services.values() for p in s.get("ports", [])}
    assert {5000, 4200, 9000, 9001, 8265, 10001, 5432} <= published
    assert services["ray-head"]["image"] == _image_name()
    assert services["ray-head"]["build"]["dockerfile"] == "infra/docker/Dockerfile"
    assert "s3://mlflow/" in str(services["mlflow"]["environment"])


def test_compose_holds_no_secrets():
    compose = _load(INFRA / "compose.yaml")
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    secrets = {v for k, v in example.items() if re.search("PASSWORD|SECRET", k)}  # user names may recur
    for key, value in _walk(compose):
        if SECRET_KEY.search(key):
            assert VAR_REF.match(value), f"compose.yaml: {key}: {value!r} is not a ${{VAR}} reference"
        for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", value):
            assert VAR_REF.match(user) and VAR_REF.match(password), f"compose.yaml: credentials in {value!r}"
        assert not any(s in value for s in secrets), f"compose.yaml: {key}: a value from .env.example"
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)\}", (INFRA / "compose.yaml").read_text()))
    assert used <= set(example), f"compose.yaml uses variables .env.example lacks: {used - set(example)}"


# ---------------------------------------------------------------- KubeRay


def test_kuberay_manifests():
    cluster = _load(INFRA / "k8s" / "raycluster.yaml")
    job = _load(INFRA / "k8s" / "rayjob.yaml")
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert isinstance(job["spec"]["ttlSecondsAfterFinished"], int)
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["ganzoo", "run"], job["spec"]["entrypoint"]
    _check_invocation("infra/k8s/rayjob.yaml", "run", words[2:])
    for where, spec in (("raycluster.yaml", cluster["spec"]), ("rayjob.yaml", job["spec"]["rayClusterSpec"])):
        containers = _containers(spec)
        assert {c["image"] for c in containers} == {_image_name()}, where
        gpu_groups = [g for g in spec["workerGroupSpecs"]
                      if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                             for c in g["template"]["spec"]["containers"])]
        assert gpu_groups and len(gpu_groups) < len(spec["workerGroupSpecs"]), f"{where}: a CPU and a GPU group"
        for container in containers:
            env = {e["name"]: e for e in container.get("env", [])}
            assert "MLFLOW_TRACKING_URI" in env, where
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"], f"{where}: {name}"


# ---------------------------------------------------------------- Ray cluster launcher


def test_ray_cluster_yaml_is_valid_and_installs_torch_first():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(INFRA / "ray" / "cluster-aws.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))  # ray's own schema and checks, as `ray up` runs them
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    types = config["available_node_types"]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU") for t in workers) and any(not t["resources"].get("GPU") for t in workers)
    assert all("max_workers" in t and "min_workers" in t for t in workers)
    setup = config["setup_commands"]
    torch = [i for i, c in enumerate(setup) if f"torch=={_pinned_torch()}" in c]
    project = [i for i, c in enumerate(setup) if re.search(r"pip install (--quiet )?(-e )?\.(\s|$|\[)", c)]
    assert torch and project and torch[0] < project[0], setup
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address" in c for c in config["worker_start_ray_commands"])
