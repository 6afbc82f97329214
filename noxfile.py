"""Development sessions: `nox -s lint typing tests docs` is what CI runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typing", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(*nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package."""
    pyproject = nox.project.load_toml("pyproject.toml")
    session.install("-e", ".", *nox.project.dependency_groups(pyproject, "typing"))
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite."""
    pyproject = nox.project.load_toml("pyproject.toml")
    session.install("-e", ".", *nox.project.dependency_groups(pyproject, "test"))
    _browser(session)
    session.run("pytest", *session.posargs)


def _browser(session: nox.Session) -> None:
    """Debian's chromium and chromium-driver, for the dashboard's browser tests."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if shutil.which("apt-get") is None:
        session.error("the dashboard tests need chromium and chromedriver on the PATH")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run(*sudo, "apt-get", "update", "-qq", external=True, env=env)
    session.run(
        *sudo,
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
        external=True,
        env=env,
    )


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site (MkDocs Material, API reference from docstrings); warnings fail it."""
    pyproject = nox.project.load_toml("pyproject.toml")
    session.install("-e", ".[dashboard]", *nox.project.dependency_groups(pyproject, "docs"))
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints figures and writes them as JSON."""
    pyproject = nox.project.load_toml("pyproject.toml")
    session.install("-e", ".", *nox.project.dependency_groups(pyproject, "bench"))
    session.run("python", "benchmarks/engine.py", *session.posargs)
    session.run("python", "benchmarks/sqlite.py", *session.posargs)
    session.run("python", "benchmarks/postgres.py", *session.posargs)
    session.run("python", "benchmarks/eternal.py", *session.posargs)
    session.run("python", "benchmarks/peers.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: `durable demo`."""
    session.install("-e", ".")
    session.run("durable", "demo")


@nox.session
def examples(session: nox.Session) -> None:
    """Every example in `examples/`, in order; offline unless GEMINI_API_KEY is set."""
    session.install("-e", ".[genai]")
    for path in sorted(Path("examples").glob("*.py")):
        if not path.name.startswith("_"):
            session.run("python", str(path))
