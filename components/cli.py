"""The ``ganzoo`` command line. Heavy imports (torch, ray) happen inside the commands that need them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from components.errors import GanzooError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Retrain a zoo of GAN families.")

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file.")
SetOption = typer.Option(None, "--set", help="Override a params key, e.g. --set train.steps=200 (repeatable).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(params_file: Path, sets: Optional[List[str]]):
    from components.config import load_params

    return load_params(params_file, list(sets or []))


@app.command()
def families() -> None:
    """List every registered family with its task kind and paper."""
    from components.families import family_names, get_family

    rows = [(n, get_family(n).task.value, get_family(n).paper) for n in family_names()]
    width = max(len(r[0]) for r in rows)
    kind_width = max(len(r[1]) for r in rows)
    for name, kind, paper in rows:
        typer.echo(f"{name:<{width}}  {kind:<{kind_width}}  {paper}")


@app.command()
def prepare(params_file: Path = ParamsOption, sets: Optional[List[str]] = SetOption) -> None:
    """Prepare the configured data source into the prepared format."""
    from components.data import prepare_dataset

    params = _load(params_file, sets)
    d = params.data
    manifest = prepare_dataset(d.source, d.prepared_dir, d.image_size, d.s3_endpoint_url)
    typer.echo(f"prepared {manifest['count']} images {manifest['shape'][1:]} from {d.source} into {d.prepared_dir}")


@app.command()
def train(
    family: Optional[List[str]] = typer.Option(None, "--family", "-f", help="Family to train (repeatable); "
                                               "default: the families in params.yaml."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (train.workers)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training iterations (train.steps)."),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="Name of the run; the same name resumes it."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Prepare the data and train families on Ray; prints where each final checkpoint is."""
    from components.data import prepare_dataset, load_prepared
    from components.training.launcher import train_family

    assignments = list(sets or [])
    assignments += [f"train.workers={workers}"] if workers is not None else []
    assignments += [f"train.steps={steps}"] if steps is not None else []
    assignments += [f"families={list(family)}"] if family else []
    params = _load(params_file, assignments)
    d = params.data
    prepare_dataset(d.source, d.prepared_dir, d.image_size, d.s3_endpoint_url)
    prepared = load_prepared(d.prepared_dir)
    failed = 0
    for name in params.families:
        outcome = train_family(params, name, prepared, run_name if len(params.families) == 1 else None)
        if outcome.ok:
            rate = outcome.metrics.get("images_per_s")
            speed = f", {rate:.0f} images/s" if rate else ""
            typer.echo(f"{name}: finished {outcome.step} steps{speed}; checkpoint: {outcome.checkpoint}")
        else:
            failed += 1
            typer.echo(f"{name}: {outcome.status}: {outcome.reason}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def sample(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="A checkpoint directory or a run directory."),
    n: int = typer.Option(5000, "-n", help="Number of images."),
    out: Path = typer.Option(Path("samples.npz"), "--out", "-o", help="Output .npz (images, and labels if conditional)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
) -> None:
    """Write generated images (N x C x H x W float32 in [-1, 1]) and their requested classes to an .npz."""
    from components.training.sampling import sample_from_checkpoint, write_samples

    images, labels = sample_from_checkpoint(checkpoint, n, seed)
    write_samples(out, images, labels)
    extra = f" and labels ({len(set(labels.tolist()))} classes)" if labels is not None else ""
    typer.echo(f"wrote {images.shape[0]} images {list(images.shape[1:])}{extra} to {out}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except GanzooError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
