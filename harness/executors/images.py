"""Build or reuse one workload image per base image, through the docker SDK.

The workload image is ``harness/image/Dockerfile`` on top of a CUDA PyTorch base (the matrix's
``image`` axis). Its tag names the base and a digest of the workload code, so a code change
builds a new image and an unchanged tree reuses the one built before:
``harness-workload:<base-slug>-<12 hex of the full base reference>-<12 hex of the code>``. The
slug is only for people (``a/b:c`` and ``a/b-c`` share one); the hash of the full reference keeps
two bases apart. Containers are created from the image id, never the tag, so a tag that another
build moves cannot change what a run runs; a tag is reused only when its labels name the same
base reference, base digest and code digest.

The recipe and the workload sources are taken from the imported ``harness`` package (the
Dockerfile is package data), so a wheel install builds exactly what a checkout builds: the
context paths, and so the digest, are relative to the folder the package is imported from.

Provenance: every run records the *base* image's digest (its RepoDigests entry; a base that was
never pushed or pulled, such as the local CPU stand-in, has none, so its image id stands in and
``base_digest_kind`` says so) and the *built* image's id.

Offline builds: when ``HARNESS_WHEELHOUSE`` names a folder of wheels, it is served from a
loopback ``http.server`` and the build runs with host networking (only then: it is how the
build reaches the host's loopback) and ``pip --no-index --find-links http://127.0.0.1:PORT/``, so
the build reaches no registry. Without a wheelhouse the engine's default build network is used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import logging
import os
import re
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
from harness.errors import ExecutorError

log = logging.getLogger(__name__)

IMAGE_REPOSITORY = "harness-workload"
#: The recipe's path in the build context (and in the package: ``harness/image/Dockerfile``).
DOCKERFILE = "harness/image/Dockerfile"
#: The workload sources in the context, relative to the folder holding the ``harness`` package:
#: single files, then folders taken whole (no ``__pycache__``, no ``.pyc``).
WORKLOAD_SOURCES = ("harness/__init__.py", "harness/mnist.py")
WORKLOAD_PACKAGES = ("harness/contract", "harness/workload")
WHEELHOUSE_ENV = "HARNESS_WHEELHOUSE"
LABEL_CODE = "harness.workload-digest"
LABEL_BASE = "harness.base-image"
LABEL_BASE_DIGEST = "harness.base-digest"
#: Docker's limit on the part of a reference after the colon.
TAG_MAX = 128
#: hex digits of the full base reference's sha256, and of the code digest, in a tag
BASE_HASH_LEN = 12
CODE_HASH_LEN = 12
#: what a Docker tag may hold: a word character first, then word characters, dots and dashes
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

START_ENGINE_HINT = (
    'start an engine (eval "$(scripts/docker-engine.sh start)"), or point DOCKER_HOST at a '
    "running one; or run without containers: --executor local"
)


@dataclass(frozen=True)
class WorkloadImage:
    """A workload image ready to run, and what a run record says about it."""

    base: str
    tag: str
    image_id: str
    base_digest: str
    base_digest_kind: str  # "repo_digest" or "image_id" (a local image with no registry digest)
    code_digest: str
    built: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_root() -> Path:
    """The folder the ``harness`` package is imported from: site-packages for an installed wheel,
    the checkout for an editable install. Context paths are relative to it."""
    return Path(harness.__file__).resolve().parent.parent


def connect(timeout: float = 60.0) -> Any:
    """A docker client that has answered a ping; ExecutorError naming the fix otherwise."""
    import docker  # lazy: `harness plan` and `report` never need the SDK

    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (DOCKER_HOST unset)"
        raise ExecutorError(
            f"cannot reach a Docker engine at {where}: {exc}", hint=START_ENGINE_HINT
        ) from exc
    return client


def workload_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """The files that go into the image: (path in the context, path on disk), sorted.

    Only the workload side: ``harness/__init__.py``, ``harness/mnist.py``,
    ``harness/contract/**``, ``harness/workload/**`` (no caches) and the Dockerfile itself, all
    from the imported package (``root``: the folder holding it, default ``source_root()``).
    """
    root = root or source_root()
    files = [(name, root / name) for name in (DOCKERFILE, *WORKLOAD_SOURCES)]
    missing = [name for name, path in files if not path.is_file()]
    for package in WORKLOAD_PACKAGES:
        found = [
            path
            for path in sorted((root / package).rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
        if not found:
            missing.append(f"{package}/")
        files.extend((path.relative_to(root).as_posix(), path) for path in found)
    if missing:
        raise ExecutorError(
            f"the harness installation is incomplete under {root}: missing {', '.join(missing)}",
            hint="the package lacks its workload sources or image recipe: reinstall harness "
            "(pip install --force-reinstall HARNESS-WHEEL, or pip install . in the source tree)",
        )
    return sorted(files)


def code_digest(root: Path | None = None) -> str:
    """sha256 over each context file's path and bytes: the image's identity besides its base."""
    digest = hashlib.sha256()
    for name, path in workload_files(root):
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


#: The matrix's ``workload.requirements`` in the build context, one per line (empty without
#: any): pip reads them with ``-r``, so no requirement is ever part of a shell line.
REQUIREMENTS_FILE = "harness-user-requirements.txt"


def requirements_text(requirements: Sequence[str]) -> str:
    """The requirements file: each requirement on its own line, sorted and deduplicated."""
    return "".join(f"{r}\n" for r in sorted(set(requirements)))


def image_digest(code: str, requirements: Sequence[str] = ()) -> str:
    """The digest an image's tag and label carry: the code digest alone without requirements
    (the plain image, as before they existed), else sha256 over it and the sorted
    requirements, so a change to them builds a new image and never reuses the plain one."""
    if not requirements:
        return code
    return hashlib.sha256(f"{code}\0{requirements_text(requirements)}".encode()).hexdigest()


def base_slug(base: str) -> str:
    """A tag-safe name for a base image: ``nvcr.io/nvidia/pytorch:24.01-py3`` -> ``nvcr.io-...``.

    For people only: it loses characters (``a/b:c`` and ``a/b-c`` give one slug), so a tag
    never relies on it alone (``workload_tag`` adds a hash of the full reference)."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-.")
    return slug or "base"


def base_ref_hash(base: str) -> str:
    """The first hex digits of the sha256 of the base reference exactly as the matrix names it."""
    return hashlib.sha256(base.encode()).hexdigest()[:BASE_HASH_LEN]


def workload_tag(base: str, digest: str) -> str:
    """``harness-workload:<slug>-<hash of the full base reference>-<code digest>``.

    Two bases get two tags, whatever their slugs; the slug is cut so the tag stays within
    Docker's 128 characters (the hashes are never cut)."""
    suffix = f"-{base_ref_hash(base)}-{digest[:CODE_HASH_LEN]}"
    slug = base_slug(base)[: TAG_MAX - len(suffix)].rstrip("-.") or "base"
    return f"{IMAGE_REPOSITORY}:{slug}{suffix}"


def is_reusable(labels: dict[str, str] | None, base: str, base_digest: str, digest: str) -> bool:
    """An image found under a tag is this base's workload image only if its labels say the same
    base reference, base digest and code digest (a tag is a name anyone can move)."""
    labels = labels or {}
    return (
        labels.get(LABEL_BASE) == base
        and labels.get(LABEL_BASE_DIGEST) == base_digest
        and labels.get(LABEL_CODE) == digest
    )


def build_context(root: Path | None = None, requirements: Sequence[str] = ()) -> io.BytesIO:
    """A tar of the Dockerfile and the workload sources only (not the 6 GB venv beside them),
    and the user's requirements file (``REQUIREMENTS_FILE``, empty without any)."""
    buffer = io.BytesIO()
    members = [(name, path.read_bytes()) for name, path in workload_files(root)]
    members.append((REQUIREMENTS_FILE, requirements_text(requirements).encode()))
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def base_image_digest(client: Any, base: str) -> tuple[str, str, str]:
    """(digest, kind, image id) of the base: a registry digest, or the id where there is none."""
    import docker

    try:
        image = client.images.get(base)
    except docker.errors.ImageNotFound:
        log.info("base image %s is not in the engine; pulling it", base)
        try:
            image = client.images.pull(base)
        except docker.errors.DockerException as exc:
            raise ExecutorError(
                f"no such image: {base} is not in the engine and could not be pulled ({exc})",
                hint=(
                    f"docker pull {base} on a machine with registry access, or build the CPU "
                    "stand-in with scripts/build-standin-base.sh; or use --executor local"
                ),
            ) from exc
    repo_digests = image.attrs.get("RepoDigests") or []
    if repo_digests:
        return repo_digests[0].split("@", 1)[-1], "repo_digest", image.id
    return image.id, "image_id", image.id


@contextlib.contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """Serve ``path`` on 127.0.0.1 at a free port for the duration of a build; yields the URL."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.debug("wheelhouse: " + format, *args)


def ensure_workload_image(
    client: Any,
    base: str,
    *,
    root: Path | None = None,
    wheelhouse: Path | None = None,
    rebuild: bool = False,
    requirements: Sequence[str] = (),
) -> WorkloadImage:
    """Return the workload image for ``base``, building it only when no image has this tag.
    ``requirements`` (the matrix's ``workload.requirements``) are installed after the
    harness's own, and are part of the tag's digest (``image_digest``)."""
    import docker

    root = root or source_root()
    digest = image_digest(code_digest(root), requirements)
    tag = workload_tag(base, digest)
    base_digest, kind, _ = base_image_digest(client, base)
    if not rebuild:
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            pass
        else:
            if is_reusable(image.labels, base, base_digest, digest):
                log.info("reusing %s (%s)", tag, image.id)
                return WorkloadImage(base, tag, image.id, base_digest, kind, digest, built=False)
            log.info("%s was built from another base or code than %s; rebuilding", tag, base)

    if wheelhouse is None and os.environ.get(WHEELHOUSE_ENV):
        wheelhouse = Path(os.environ[WHEELHOUSE_ENV])
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise ExecutorError(
            f"wheelhouse {wheelhouse} is not a folder",
            hint=f"fill it: scripts/build-wheelhouse.sh {wheelhouse}; or unset {WHEELHOUSE_ENV}",
        )
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_directory(wheelhouse)) if wheelhouse else None
        kwargs = build_kwargs(
            base=base, tag=tag, digest=digest, base_digest=base_digest, wheelhouse_url=url
        )
        log.info(
            "building %s on %s (%s)",
            tag,
            base,
            kwargs["buildargs"]["PIP_INSTALL_ARGS"] or "pip reaches its index",
        )
        image = _build(client, build_context(root, requirements), base, tag, kwargs)
    return WorkloadImage(base, tag, image.id, base_digest, kind, digest, built=True)


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this host's loopback (only the build's host network reaches it)."""
    return urllib.parse.urlsplit(url).hostname in LOOPBACK_HOSTS


def build_kwargs(
    *, base: str, tag: str, digest: str, base_digest: str, wheelhouse_url: str | None
) -> dict[str, Any]:
    """What ``images.build`` gets besides the context: a pure function, tested without Docker.

    Host networking only for a wheelhouse served on loopback (the build must reach the host's
    127.0.0.1); otherwise no ``network_mode``, so the engine's default build network is used."""
    pip_args = f"--no-index --find-links {wheelhouse_url}" if wheelhouse_url else ""
    kwargs: dict[str, Any] = {
        "custom_context": True,
        "dockerfile": DOCKERFILE,
        "tag": tag,
        "buildargs": {"BASE_IMAGE": base, "PIP_INSTALL_ARGS": pip_args},
        "labels": {LABEL_CODE: digest, LABEL_BASE: base, LABEL_BASE_DIGEST: base_digest},
        "rm": True,
        "forcerm": True,
        "pull": False,
    }
    if wheelhouse_url and is_loopback_url(wheelhouse_url):
        kwargs["network_mode"] = "host"
    return kwargs


def _build(client: Any, context: io.BytesIO, base: str, tag: str, kwargs: dict[str, Any]) -> Any:
    import docker

    try:
        image, _logs = client.images.build(fileobj=context, **kwargs)
    except docker.errors.BuildError as exc:
        tail = "".join(
            str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log
        )[-2000:]
        raise ExecutorError(
            f"building {tag} on {base} failed: {exc.msg}\n{tail}",
            hint=(
                f"offline, set {WHEELHOUSE_ENV} to a folder of wheels "
                "(scripts/build-wheelhouse.sh makes one); see docs/docker.md"
            ),
        ) from exc
    except docker.errors.APIError as exc:
        raise ExecutorError(
            f"building {tag} on {base} failed: {exc}", hint=START_ENGINE_HINT
        ) from exc
    return image
