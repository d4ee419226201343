"""The three images built for real, and each one's command run inside its filesystem (``make images``).

Not part of ``make test`` (this file's name keeps it out of collection): ``make images`` runs it.

- Builds: ``podman build --isolation chroot`` of each Dockerfile, RUN steps included, in an
  overlay store where the kernel allows one, else a vfs one. No public registry is reachable
  here, so the base images are local stand-ins, passed through the Dockerfiles' base-image ARGs:
  Debian bookworm made with debootstrap, with Python 3.11 behaving as in python:3.11-slim (pip
  may install into it; ``python`` and ``pip`` exist), this host's CA bundle and pip
  configuration; for the Lambda base, that plus LAMBDA_TASK_ROOT, awslambdaric and a
  /lambda-entrypoint.sh (infra/images/); for uv's image, /uv from PyPI's uv wheel. The
  stand-ins are built once and kept; podman's layer cache makes reruns cheap.
- Runs: ``podman run`` cannot start containers here (crun cannot set rlimits), so each image's
  ENTRYPOINT + CMD runs chrooted into a container's filesystem (``podman create`` + ``podman
  mount``), as the image's USER, in a private mount namespace (its /proc, /dev, /sys mounts go
  with it), on the host's loopback. The Lambda image's handler is fed by the emulator's Runtime
  API; the CPU and GPU images serve /health and /api/v1/predict.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import DOCKERFILES, EVENTS_DIR, INFRA_DIR
from tests.infra.images.conftest import FIGURES
from tests.infra.runners import TOKEN, invoke, lambda_runtime, runtime_api, served, with_loopback
from tests.infra.test_dockerfiles import parse
from tests.network import free_port

# Image storage: overlay where the kernel allows it (cached rebuilds take seconds), else vfs
# (works everywhere; every layer a full copy). Each has its own store: podman refuses to open a
# store with another driver than the one that made it. IMAGES_STORAGE_DRIVER=vfs|overlay forces one.
OVERLAY_ROOT, OVERLAY_RUNROOT = "/var/lib/containers/storage-overlay", "/run/containers/storage-overlay"
STORES = {
    "overlay": ["--storage-driver", "overlay", "--root", OVERLAY_ROOT, "--runroot", OVERLAY_RUNROOT],
    "vfs": ["--storage-driver", "vfs"],
}
BUILD_TIMEOUT_S = 2400
DEBOOTSTRAP_TIMEOUT_S = 900
SUITE = "bookworm"
MIRROR = os.environ.get("DEBOOTSTRAP_MIRROR", "http://deb.debian.org/debian")
PYTHON_STAND_IN = f"localhost/mlinfer-stand-in/python:3.11-{SUITE}"
LAMBDA_STAND_IN = f"localhost/mlinfer-stand-in/lambda-python:3.11-{SUITE}"
IMAGES_DIR = INFRA_DIR / "images"
CONTAINER_PREFIX = "mlinfer-images-"
# Lambda's sandbox user (sbx_user1051); the other images name their USER.
LAMBDA_USER = "993:990"


def uv_stand_in(tag: str) -> str:
    return f"localhost/mlinfer-stand-in/uv:{tag}"


def overlay_works() -> bool:
    """Import a one-file image into the overlay store, mount a container of it, find the file."""
    base = ["podman", *STORES["overlay"]]
    probe = "localhost/mlinfer-stand-in/overlay-probe:1"
    with tempfile.TemporaryDirectory(prefix="mlinfer-probe-") as folder:
        (Path(folder) / "probe").write_text("overlay\n")
        tar = subprocess.run(["tar", "-C", folder, "-c", "probe"], capture_output=True, timeout=60, check=True).stdout
        try:
            if subprocess.run([*base, "import", "-", probe], input=tar, capture_output=True, timeout=120).returncode != 0:
                return False
            created = subprocess.run([*base, "create", probe, "/probe"], capture_output=True, text=True, timeout=120)
            if created.returncode != 0:
                return False
            container = created.stdout.strip()
            mounted = subprocess.run([*base, "mount", container], capture_output=True, text=True, timeout=120)
            found = mounted.returncode == 0 and (Path(mounted.stdout.strip()) / "probe").is_file()
            subprocess.run([*base, "umount", container], capture_output=True, timeout=120)
            subprocess.run([*base, "rm", "--force", container], capture_output=True, timeout=120)
            return found
        except (OSError, subprocess.SubprocessError):
            return False


@functools.cache
def storage_driver() -> str:
    wanted = os.environ.get("IMAGES_STORAGE_DRIVER", "auto")
    if wanted in STORES:
        return wanted
    assert wanted == "auto", f"IMAGES_STORAGE_DRIVER={wanted}: use overlay, vfs or auto"
    return "overlay" if overlay_works() else "vfs"


def podman_command(*args: str) -> list[str]:
    return ["podman", *STORES[storage_driver()], *args]


def podman(*args: str, timeout: float = 300, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(podman_command(*args), capture_output=True, timeout=timeout, check=False, input=input)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')[-4000:]}")
    return result


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def inspect(tag: str) -> dict[str, Any]:
    (image,) = json.loads(podman("image", "inspect", tag).stdout)
    return dict(image)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# ---- the stand-in base images ----


def host_cert_files() -> list[Path]:
    names = [os.environ.get(n) for n in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")]
    candidates = [Path(n) for n in names if n] + [Path("/etc/ssl/certs/ca-certificates.crt")]
    return list(dict.fromkeys(p for p in candidates if p.is_file()))


def host_pip_config() -> list[tuple[Path, Path]]:
    """(host file or folder, where it goes in the image) of pip's configuration here."""
    home = Path.home()
    pairs = [
        (Path("/etc/pip.conf"), Path("/etc/pip.conf")),
        (Path("/etc/xdg/pip"), Path("/etc/xdg/pip")),
        (home / ".config" / "pip", Path("/root/.config/pip")),
        (home / ".pip", Path("/root/.pip")),
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        pairs.append((Path(os.environ["PIP_CONFIG_FILE"]), Path(os.environ["PIP_CONFIG_FILE"])))
    return [(host, image) for host, image in pairs if host.exists()]


def build_python_stand_in(log: list[str]) -> None:
    """Debian bookworm with Python 3.11, as python:3.11-slim-bookworm behaves for the Dockerfiles."""
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: `make images` installs it with apt-get (as root)")
    with tempfile.TemporaryDirectory(prefix="mlinfer-stand-in-") as folder:
        root = Path(folder) / "root"
        started = time.monotonic()
        include = "--include=python3,python3-venv,python3-pip,ca-certificates"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", include, SUITE, str(root), MIRROR],
            capture_output=True,
            text=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        log.append(f"debootstrap {SUITE}: {time.monotonic() - started:.0f}s")
        # PEP 668: Debian's Python refuses `pip install` outside a venv; the official images' does not.
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
            (root / "usr/local/bin" / name).symlink_to(target)
        for cert in host_cert_files():
            destination = root / str(cert).lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.unlink(missing_ok=True)
            shutil.copyfile(cert, destination)
        for host, image in host_pip_config():
            destination = root / str(image).lstrip("/")
            if host.is_dir():
                shutil.copytree(host, destination, dirs_exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(host, destination)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            # uv ignores pip's configuration: it needs the CA bundle named.
            "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
            **{name: value for name, value in os.environ.items() if name.startswith("PIP_")},
        }
        changes = [f"--change=ENV {name}={value}" for name, value in env.items()] + ['--change=CMD ["python3"]']
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, timeout=600, check=True).stdout
        podman("import", *changes, "-", PYTHON_STAND_IN, input=tar, timeout=600)


def build_uv_stand_in(tag: str, log: list[str]) -> None:
    """An image holding only /uv, the binary of PyPI's uv wheel of the same version."""
    with tempfile.TemporaryDirectory(prefix="mlinfer-uv-") as folder:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", f"uv=={tag}", "-d", folder],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert download.returncode == 0, f"cannot fetch uv=={tag} from PyPI:\n{download.stderr[-3000:]}"
        (wheel,) = Path(folder).glob("uv-*.whl")
        root = Path(folder) / "root"
        root.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [n for n in archive.namelist() if n.endswith(".data/scripts/uv")]
            (root / "uv").write_bytes(archive.read(member))
        (root / "uv").chmod(0o755)
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, timeout=120, check=True).stdout
        podman("import", "-", uv_stand_in(tag), input=tar, timeout=300)
        log.append(f"uv {tag} from {wheel.name}")


@pytest.fixture(scope="session")
def stand_ins() -> dict[str, str]:
    """Base image repository (as the Dockerfiles name it) -> its local stand-in, built if missing."""
    log: list[str] = []
    started = time.monotonic()
    # Containers a killed run left behind (their names carry this file's prefix).
    left = podman("ps", "--all", "--filter", f"name=^{CONTAINER_PREFIX}", "--format", "{{.Names}}").stdout.decode().split()
    for name in left:
        podman("rm", "--force", name, check=False, timeout=600)
    if not image_exists(PYTHON_STAND_IN):
        build_python_stand_in(log)
    if not image_exists(LAMBDA_STAND_IN):
        args = [f"--build-arg=PYTHON_BASE={PYTHON_STAND_IN}", f"--build-arg=AWSLAMBDARIC_VERSION={version('awslambdaric')}"]
        result = subprocess.run(
            podman_command("build", "--isolation", "chroot", *args, "-t", LAMBDA_STAND_IN, "-f", "lambda-base.Containerfile", "."),
            cwd=IMAGES_DIR,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"the Lambda stand-in did not build:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    gpu = parse(DOCKERFILES["gpu"])
    uv_tag = gpu.global_args["UV_IMAGE"].rpartition(":")[2]
    if not image_exists(uv_stand_in(uv_tag)):
        build_uv_stand_in(uv_tag, log)
    FIGURES["stand-in bases"] = {
        "podman storage": " ".join(STORES[storage_driver()]),
        "made now": "; ".join(log) or "none (all cached)",
        "time": f"{time.monotonic() - started:.0f}s",
        **{tag: megabytes(inspect(tag)["Size"]) for tag in (PYTHON_STAND_IN, LAMBDA_STAND_IN, uv_stand_in(uv_tag))},
    }
    return {
        "public.ecr.aws/lambda/python": LAMBDA_STAND_IN,
        "python": PYTHON_STAND_IN,
        "nvidia/cuda": PYTHON_STAND_IN,  # no CUDA here: the GPU image's ONNX Runtime falls back to CPU
        "ghcr.io/astral-sh/uv": uv_stand_in(uv_tag),
    }


# ---- the images ----

# The stand-in for the CUDA image has Python 3.11 of its own, and uv's standalone Python cannot be
# downloaded here (github.com and releases.astral.sh are not reachable): uv uses the base's.
EXTRA_BUILD_ARGS = {"gpu": {"UV_PYTHON_PREFERENCE": "only-system"}}


def base_image_args(name: str, stand_ins: dict[str, str]) -> dict[str, str]:
    """Every ARG a FROM line names, pointed at the stand-in for the image it defaults to."""
    dockerfile = parse(DOCKERFILES[name])
    args: dict[str, str] = {}
    for stage in dockerfile.stages:
        match = re.fullmatch(r"\$\{(\w+)\}", stage.base)
        if match is None:
            continue
        default = dockerfile.global_args[match.group(1)]
        repository = default.split("@")[0].rpartition(":")[0]
        assert repository in stand_ins, f"{name}: no local stand-in for {default}"
        args[match.group(1)] = stand_ins[repository]
    return args


@dataclass(frozen=True)
class Built:
    name: str
    tag: str
    config: dict[str, Any]
    figures: dict[str, Any]


def build_image(name: str, stand_ins: dict[str, str], log_dir: Path) -> Built:
    tag = f"localhost/ml-inference-{name}:local"
    build_args = {**base_image_args(name, stand_ins), **EXTRA_BUILD_ARGS.get(name, {})}
    command = podman_command("build", "--isolation", "chroot", "--layers", "-t", tag, "-f", str(DOCKERFILES[name]))
    command += [f"--build-arg={key}={value}" for key, value in build_args.items()] + [str(REPO_ROOT)]
    log_path = log_dir / f"build-{name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        result = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if result.returncode != 0:
        steps = re.findall(r"^STEP \d+/\d+: .*$", text, flags=re.MULTILINE)
        pytest.fail(f"{name}: podman build failed at {steps[-1] if steps else '?'} ({elapsed:.0f}s):\n{text[-6000:]}")
    image = inspect(tag)
    figures = {
        "build": f"{elapsed:.0f}s ({len(re.findall(r'--> Using cache', text))} cached steps)",
        "size": megabytes(image["Size"]),
        "build args": " ".join(f"{k}={v}" for k, v in build_args.items()),
    }
    FIGURES[f"{name} ({tag})"] = figures
    return Built(name, tag, image["Config"], figures)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session", autouse=True)
def superseded_images_removed(log_dir: Path) -> Iterator[None]:
    """After the run, the untagged images without children that no build of this run made or took from
    its cache are removed: an earlier run's images, superseded by this run's (their tags moved), and its
    stage layers. Without it each rerun after a change left about 6 GB behind. This run's images stay,
    as the next run's cache. A run that built only some of the images (``-k``) removes nothing, so that
    the other images' stage layers stay cached."""
    yield
    logs = sorted(log_dir.glob("build-*.log"))
    if len(logs) < len(DOCKERFILES):
        FIGURES["superseded images"] = {"removed": f"none: {len(logs)} of {len(DOCKERFILES)} images built in this run"}
        return
    used: set[str] = set()
    for log in logs:
        used.update(re.findall(r"^--> (?:Using cache )?([0-9a-f]{10,64})\b", log.read_text(errors="replace"), flags=re.MULTILINE))
    listed = podman("images", "--quiet", "--no-trunc", "--filter", "dangling=true", check=False)
    dangling = {line.strip().removeprefix("sha256:") for line in listed.stdout.decode().split()}
    superseded = sorted(image for image in dangling if not any(image.startswith(prefix) for prefix in used))
    removed = sum(podman("rmi", image, check=False, timeout=600).returncode == 0 for image in superseded)
    FIGURES["superseded images"] = {"removed": f"{removed} of {len(superseded)} (untagged, no children, not used by this run)"}


@pytest.fixture(scope="session")
def lambda_image(stand_ins: dict[str, str], log_dir: Path) -> Built:
    return build_image("lambda", stand_ins, log_dir)


@pytest.fixture(scope="session")
def cpu_image(stand_ins: dict[str, str], log_dir: Path) -> Built:
    return build_image("cpu", stand_ins, log_dir)


@pytest.fixture(scope="session")
def gpu_image(stand_ins: dict[str, str], log_dir: Path) -> Built:
    return build_image("gpu", stand_ins, log_dir)


# ---- running an image's command in its filesystem ----


@contextmanager
def container_root(built: Built) -> Iterator[Path]:
    """A container's writable filesystem (``podman create`` + ``podman mount``), removed after."""
    name = f"{CONTAINER_PREFIX}{built.name}-{os.getpid()}"
    podman("rm", "--force", name, check=False)
    podman("create", "--name", name, built.tag, timeout=600)
    try:
        yield Path(podman("mount", name).stdout.decode().strip())
    finally:
        podman("umount", name, check=False)
        podman("rm", "--force", name, check=False, timeout=600)


def user_spec(root: Path, user: str) -> str:
    """USER as uid:gid, the gid from the image's /etc/passwd (a bare uid keeps its own as gid)."""
    if ":" in user:
        return user
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if user in (fields[0], fields[2]):
            return f"{fields[2]}:{fields[3]}"
    return f"{user}:{user}"


def chrooted(root: Path, built: Built, argv: list[str], user: str) -> list[str]:
    """``argv`` run in the image's filesystem, from its WORKDIR, as ``user``, in a private mount
    namespace with its own /proc and the host's /dev and /sys."""
    mounts = 'r=$1; shift; mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && mount --rbind /sys "$r/sys" && exec chroot "$@"'
    workdir = built.config.get("WorkingDir") or "/"
    return [
        "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", mounts, "sh", str(root),
        f"--userspec={user_spec(root, user)}", str(root), "/usr/bin/env", f"--chdir={workdir}", *argv,
    ]  # fmt: skip


def image_env(built: Built, **overrides: str) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in built.config.get("Env") or [])
    env.update(overrides)
    return env


def image_argv(built: Built) -> list[str]:
    return [*(built.config.get("Entrypoint") or []), *(built.config.get("Cmd") or [])]


def open_inference_protocol(port: int, grpc_port: int) -> tuple[str, str]:
    """One V2 inference over REST and one over gRPC (the image's GRPC_PORT server), with the official clients."""
    import numpy as np
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    answers = []
    for module, address in ((triton_http, f"127.0.0.1:{port}"), (triton_grpc, f"127.0.0.1:{grpc_port}")):
        client = module.InferenceServerClient(address)
        text = module.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"I love this!"], dtype=np.object_))
        assert client.is_server_ready(), address
        result = client.infer("sentiment_analysis", [text], model_version="v1", headers={"x-token": TOKEN})
        answers.append(f"{result.as_numpy('label').tolist()} {result.as_numpy('probabilities').round(4).tolist()}")
        client.close()
    return answers[0], answers[1]


def serve_in_image(built: Built, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    port, grpc_port = free_port(), free_port()
    argv = with_loopback(image_argv(built), port)
    with container_root(built) as root:
        assert image_env(built)["GRPC_PORT"] == "8001", "the image serves gRPC on Triton's port"
        env = image_env(built, AUTH_TOKEN=TOKEN, HOST="127.0.0.1", PORT=str(port), GRPC_PORT=str(grpc_port))
        command = chrooted(root, built, argv, built.config.get("User") or "root")
        started = time.monotonic()
        with served(command, env=env, cwd=REPO_ROOT, log_path=tmp_path / "server.log", port=port) as server:
            ready_s = time.monotonic() - started
            health = server.health()
            status, body = server.predict(["I love this!"])
            rest, over_grpc = open_inference_protocol(port, grpc_port)
        assert status == 200, body
        assert rest.startswith("[b'positive']") and over_grpc == rest, (rest, over_grpc)
        built.figures["/v2 infer (REST, gRPC)"] = f"{rest} | {over_grpc}"
        built.figures["ran"] = f"{' '.join(argv)}  (chroot, user {user_spec(root, built.config.get('User') or 'root')})"
        built.figures["/health"] = f"200 after {ready_s:.1f}s: status={health.get('status')} providers={health.get('providers')}"
        built.figures["/api/v1/predict"] = f"{status} {json.dumps(body)[:300]}"
    return health, body, (tmp_path / "server.log").read_text(errors="replace")


# ---- the tests ----


def test_lambda_image_answers_an_http_api_event(lambda_image: Built, tmp_path: Path) -> None:
    argv = image_argv(lambda_image)
    assert argv[0] == "/lambda-entrypoint.sh" and argv[1:] == json.loads(parse(DOCKERFILES["lambda"]).final.args("CMD")[0])
    event = (EVENTS_DIR / "http_api_predict.json").read_bytes()
    with container_root(lambda_image) as root, runtime_api("InferenceFunction", tmp_path / "emulator.log") as api:
        env = image_env(lambda_image, AUTH_TOKEN=TOKEN, POWERTOOLS_TRACE_DISABLED="true", AWS_LAMBDA_FUNCTION_NAME="ml-inference")
        started = time.monotonic()
        with lambda_runtime(
            chrooted(root, lambda_image, argv, LAMBDA_USER), env=env, cwd=REPO_ROOT, log_path=tmp_path / "runtime.log", api=api
        ):
            init_s = time.monotonic() - started
            invoked = time.monotonic()
            response = invoke(api, event)
            invoke_ms = (time.monotonic() - invoked) * 1000
    assert response["statusCode"] == 200, (response, (tmp_path / "runtime.log").read_text()[-4000:])
    body = json.loads(response["body"])
    assert body["model_version"] == "v1" and body["results"][0]["prediction"] == "positive", body
    lambda_image.figures["ran"] = f"{' '.join(argv)} -> python -m awslambdaric (chroot, user {LAMBDA_USER}), Runtime API {api.address}"
    lambda_image.figures["init"] = f"{init_s:.1f}s until the runtime polled"
    lambda_image.figures["events/http_api_predict.json"] = f"{response['statusCode']} in {invoke_ms:.0f} ms: {response['body'][:300]}"


def test_cpu_image_serves(cpu_image: Built, tmp_path: Path) -> None:
    health, body, _ = serve_in_image(cpu_image, tmp_path)
    assert health["providers"] == ["CPUExecutionProvider"], health
    assert body["results"][0]["prediction"] == "positive", body


def test_gpu_image_serves_on_cpu_without_cuda(gpu_image: Built, tmp_path: Path) -> None:
    """The stand-in base has no CUDA: the CUDA provider cannot load, ONNX Runtime runs on CPU."""
    env = image_env(gpu_image)
    assert env["EXECUTION_PROVIDERS"] == "CUDAExecutionProvider,CPUExecutionProvider"
    health, body, log = serve_in_image(gpu_image, tmp_path)
    assert health["providers"] == ["CPUExecutionProvider"], (health, log[-4000:])
    assert "sentiment_analysis:v1" in health["gpu_fallback"], health
    assert body["results"][0]["prediction"] == "positive", body
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    fallback = sorted({re.sub(r"^.*?\] ", "", line) for line in plain.splitlines() if "CUDA" in line})
    assert fallback, plain[-4000:]
    gpu_image.figures["ONNX Runtime on CUDA"] = " | ".join(fallback)[:700]
