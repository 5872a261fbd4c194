"""docker/: the images and the compose stack hold what team mode needs (no docker engine here).

There is no docker engine on these machines, so the images are never built in CI; these tests
parse the files, run the entry point script, and validate the stack with Debian's
``docker-compose config`` (installed by scripts/system-deps.sh; required under CI=true).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.I)
CORE_SERVICES = {"postgres", "mlflow", "sweep-worker", "turing"}


# ---- helpers ----------------------------------------------------------------------------
def load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, line continuations joined."""
    out, buf = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def command_text(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


# ---- compose.yaml -----------------------------------------------------------------------
def test_compose_has_the_team_services():
    services = load("compose.yaml")["services"]
    assert CORE_SERVICES <= set(services)

    pg = services["postgres"]
    assert pg["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any("/var/lib/postgresql/data" in v for v in pg["volumes"])
    assert any("docker-entrypoint-initdb.d" in v for v in pg["volumes"])  # creates the optuna db

    ml = command_text(services["mlflow"])
    for flag in ("mlflow server", "--backend-store-uri", "--serve-artifacts",
                 "--artifacts-destination /mlartifacts", "--host 0.0.0.0"):
        assert flag in ml, flag
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.endswith(":/mlartifacts") for v in services["mlflow"]["volumes"])

    sw = services["sweep-worker"]
    sweep = command_text(sw)
    assert "augforge sweep" in sweep and '--storage "$$OPTUNA_STORAGE"' in sweep and "--study" in sweep
    assert "container_name" not in sw  # scaled service
    assert str(sw["deploy"]["replicas"]).startswith("${SWEEP_WORKERS")
    assert sw["restart"] == "on-failure"  # a finished sweep must not be restarted forever

    assert 'augforge turing serve "/studies/$$TURING_STUDY"' in command_text(services["turing"])
    assert any(v.endswith(":/studies") for v in services["turing"]["volumes"])
    assert "--host 0.0.0.0" in command_text(services["turing"])


def test_compose_uses_the_augforge_image_with_volumes():
    services = load("compose.yaml")["services"]
    for name in CORE_SERVICES - {"postgres"}:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile" and svc["build"]["context"] == ".."
        assert svc["image"].startswith("augforge:")
    for name in ("sweep-worker", "turing"):
        vols = services[name]["volumes"]
        assert any(v.endswith(":/mlruns") for v in vols) and any(v.endswith(":/data") for v in vols)


def test_compose_secrets_come_from_the_env_file_only():
    compose = load("compose.yaml")
    text = yaml.safe_dump(compose, width=10_000)  # the content, without comments
    for name, svc in compose["services"].items():
        assert "env_file" in svc, f"{name}: no env_file"
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for key, value in items:
            assert not SECRET_KEY.search(key), f"{name}: secret {key} set inline"
    # no literal credentials in URLs, no literal password assignments
    assert not re.search(r"postgresql://[^\s\"'$]+:[^\s\"'$@]+@", text)
    assert not re.search(r"PASSWORD\s*[:=]\s*[^\s$]", text)
    # URLs are assembled inside the container from the env file (escaped $$, not interpolated)
    assert "$$MLFLOW_BACKEND_STORE_URI" in text and "$$OPTUNA_STORAGE" in text


def test_env_example_is_a_template_and_real_env_is_ignored():
    keys = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            keys[k.strip()] = v.strip()
    for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "OPTUNA_DB", "MLFLOW_TRACKING_URI",
              "SWEEP_STUDY", "SWEEP_TRIALS", "TURING_STUDY"):
        assert k in keys, k
    assert keys["POSTGRES_PASSWORD"] == "change-me"
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
        assert ignored.returncode == 0, "docker/.env must be git-ignored"
        tracked = subprocess.run(["git", "ls-files", "docker/.env", ".env"], cwd=ROOT, capture_output=True, text=True)
        assert tracked.stdout.strip() == ""


def test_gpu_overlay_runs_the_same_sweep_on_cuda_images():
    base = load("compose.yaml")["services"]["sweep-worker"]
    gpu = load("compose.gpu.yaml")["services"]
    assert "sweep-worker" in gpu and len(gpu) >= 2
    for name, svc in gpu.items():
        assert svc["build"]["dockerfile"] == "docker/Dockerfile.cuda"
        assert command_text(svc) == command_text(base), name
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    ids = [svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0] for svc in gpu.values()]
    assert len(set(ids)) == len(ids), "one GPU per worker"


# ---- Dockerfiles ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_essentials(name):
    ins = instructions(DOCKER / name)
    ops = [op for op, _ in ins]
    text = "\n".join(f"{op} {args}" for op, args in ins)

    # torch is installed alone, from the PyTorch index, BEFORE the project is copied/installed
    torch_i = next(i for i, (op, a) in enumerate(ins) if op == "RUN" and "pip install" in a and "torch==" in a)
    assert "--index-url" in ins[torch_i][1]
    project_i = next(i for i, (op, a) in enumerate(ins) if op == "RUN" and re.search(r"pip install \./? ", a + " "))
    copy_i = next(i for i, (op, a) in enumerate(ins) if op == "COPY" and a.startswith("augforge"))
    assert torch_i < copy_i < project_i
    assert "./plugins" in ins[project_i][1] and "./runtime" in ins[project_i][1]  # augforge needs augforge-runtime

    # non-root user for everything after setup
    users = [a for op, a in ins if op == "USER"]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    assert ops.index("USER") > project_i

    # augforge entry point (the script maps `IMAGE train ...` to `augforge train ...`)
    entry = next(a for op, a in ins if op == "ENTRYPOINT")
    assert "augforge-entrypoint" in entry
    assert "augforge" in next(a for op, a in ins if op == "CMD")
    assert "COPY docker/entrypoint.sh /usr/local/bin/augforge-entrypoint" in text

    volumes = next(a for op, a in ins if op == "VOLUME")
    assert "/data" in volumes and "/mlruns" in volumes

    # nothing secret baked in
    for op, args in ins:
        if op in {"ENV", "ARG"}:
            assert not SECRET_KEY.search(args), f"{op} {args}"
        if op in {"COPY", "ADD"}:
            assert ".env" not in shlex.split(args)[0] and "env.example" not in args


def test_cpu_image_uses_python_slim_and_the_cpu_torch_index():
    ins = instructions(DOCKER / "Dockerfile")
    assert ins[0] == ("FROM", "python:3.11-slim")
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_VERSION"] == "2.13.0"


def test_cuda_image_uses_a_cuda_runtime_base_and_gpu_torch():
    ins = instructions(DOCKER / "Dockerfile.cuda")
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    assert ("FROM", "${CUDA_IMAGE}") in ins


# ---- entry point and helper scripts ----------------------------------------------------
def test_scripts_parse():
    for script in (DOCKER / "entrypoint.sh", DOCKER / "postgres-init" / "10-databases.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK), f"{script} is not executable"
    for script in (ROOT / "scripts" / "team-up.sh", ROOT / "scripts" / "team-down.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_entrypoint_defaults_to_augforge_and_builds_urls_from_env(tmp_path):
    for exe in ("augforge", "mlflow"):
        fake = tmp_path / exe
        fake.write_text(f'#!/bin/sh\necho "{exe} $*"\necho "storage=$OPTUNA_STORAGE"\necho "backend=$MLFLOW_BACKEND_STORE_URI"\n')
        fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "pw",
           "POSTGRES_DB": "mlflow", "OPTUNA_DB": "optuna", "POSTGRES_HOST": "db"}

    def run(*args, **extra):
        return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *args], env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.splitlines()

    out = run("train", "--preset", "smoke")
    assert out[0] == "augforge train --preset smoke"
    assert out[1] == "storage=postgresql://u:pw@db:5432/optuna"
    assert out[2] == "backend=postgresql://u:pw@db:5432/mlflow"
    assert run("mlflow", "server")[0] == "mlflow server"
    assert run()[0] == "augforge --help"
    # an explicit URL wins
    assert run("sweep", OPTUNA_STORAGE="sqlite:///x.db")[1] == "storage=sqlite:///x.db"


# ---- docker-compose config ---------------------------------------------------------------
@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]], ids=["cpu", "gpu"])
def test_docker_compose_config_validates(files):
    exe = shutil.which("docker-compose")
    if exe is None:
        if IN_CI:
            pytest.fail("docker-compose missing in CI (scripts/system-deps.sh installs Debian's package)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    args = [exe]
    for f in files:
        args += ["-f", str(DOCKER / f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEP_", "POSTGRES_", "AUGFORGE_DATA"))}
    env["AUGFORGE_ENV_FILE"] = "env.example"
    proc = subprocess.run([*args, "config"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert CORE_SERVICES <= set(rendered["services"])
    assert rendered["services"]["sweep-worker"]["deploy"]["replicas"] in (1, 2)
    # the env file's values reach the containers (as environment), not the images
    assert rendered["services"]["mlflow"]["environment"]["POSTGRES_PASSWORD"] == "change-me"
