"""The light commands (--help, every command's --help, families) import none of torch, Ray, MLflow, Prefect or
DVC: they answer in a fraction of a second. How fast is benchmarks/startup.py's business; this checks the cause.

One fresh interpreter runs all of them through the real entry point, then reports what it had imported.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "mlflow", "prefect", "dvc")

PROBE = textwrap.dedent("""
    import contextlib, io, json, sys

    import typer

    from components import cli

    def paths(command, prefix=()):
        yield list(prefix)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from paths(sub, (*prefix, name))

    runs = []
    for argv in [["--help"], ["families"]] + [[*p, "--help"] for p in paths(typer.main.get_command(cli.app)) if p]:
        out, err = io.StringIO(), io.StringIO()
        sys.argv = ["ganzoo", *argv]
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code or 0
        runs.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(__HEAVY__))
    print("RESULT " + json.dumps({"runs": runs, "heavy": heavy}))
""").replace("__HEAVY__", repr(HEAVY))


@pytest.fixture(scope="module")
def probe():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_light_commands_import_no_heavy_package(probe):
    assert probe["heavy"] == [], f"imported by {[r['argv'] for r in probe['runs']]}: {probe['heavy']}"


def test_every_command_help_ran(probe):
    runs = {" ".join(r["argv"]): r for r in probe["runs"]}
    for name in ("train", "sample", "run", "serve", "submit", "jobs", "jobs status", "evaluate", "register",
                 "promote", "prepare", "init", "families"):
        assert f"{name} --help" in runs, sorted(runs)
    for argv, run in runs.items():
        assert run["code"] == 0, (argv, run["stderr"])
        if argv.endswith("--help"):
            assert "Usage:" in run["stdout"], argv


def test_families_prints_the_registry(probe):
    """The rows that `ganzoo families` printed when it imported every family, formatted as then."""
    from components.families import family_names, get_family

    rows = [(n, get_family(n).task.value, get_family(n).paper) for n in family_names()]
    width, kind_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    expected = "".join(f"{name:<{width}}  {kind:<{kind_width}}  {paper}\n" for name, kind, paper in rows)
    (run,) = [r for r in probe["runs"] if r["argv"] == ["families"]]
    assert run["stdout"] == expected
