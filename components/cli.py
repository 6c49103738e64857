"""The ``ganzoo`` command line. Heavy imports (torch, ray) happen inside the commands that need them."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from components.errors import GanzooError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Retrain a zoo of GAN families.")

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file.")
SetOption = typer.Option(None, "--set", help="Override a params key, e.g. --set train.steps=200 (repeatable).")
RayAddressOption = typer.Option(None, "--ray-address", help="Join this Ray cluster (auto, ray://head:10001) "
                                "instead of starting a local one (train.ray_address).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(params_file: Path, sets: Optional[List[str]]):
    from components.config import load_params

    return load_params(params_file, list(sets or []))


@app.command()
def families() -> None:
    """List every registered family with its task kind and paper."""
    from components.family_catalog import family_catalog  # read from the families' source: no torch import

    rows = [(entry.name, entry.task, entry.paper) for entry in family_catalog()]
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
    manifest = prepare_dataset(d.source, d.prepared_dir, d.image_size, d.s3_endpoint_url, d.attributes)
    typer.echo(f"prepared {manifest['count']} images {manifest['shape'][1:]} from {d.source} into {d.prepared_dir}")


@app.command()
def train(
    family: Optional[List[str]] = typer.Option(None, "--family", "-f", help="Family to train (repeatable); "
                                               "default: the families in params.yaml."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (train.workers)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training iterations (train.steps)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Stop after this much training wall "
                                                "time, or at --steps if that comes first (train.max_seconds)."),
    run_name: Optional[str] = typer.Option(None, "--run-name", help="Name of the run; the same name resumes it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ray_address: Optional[str] = RayAddressOption,
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Prepare the data and train families on Ray; prints where each final checkpoint is."""
    from components import pipeline

    if run_name is not None:
        _check_run_name(run_name)
    assignments = list(sets or [])
    assignments += [f"train.workers={workers}"] if workers is not None else []
    assignments += [f"train.steps={steps}"] if steps is not None else []
    assignments += [f"train.max_seconds={max_seconds}"] if max_seconds is not None else []
    assignments += [f"families={list(family)}"] if family else []
    assignments += [f"train.ray_address={ray_address}"] if ray_address else []
    params = _load(params_file, assignments)
    pipeline.prepare_data(params)
    data_version = pipeline.current_data_version(params)
    failed = 0
    for name in params.families:
        record = pipeline.train_stage(params, name, data_version, show_progress=progress,
                                      run_name=run_name if len(params.families) == 1 else None)
        if record["status"] == "finished":
            rate = record["metrics"].get("images_per_s")
            speed = f", {rate:.0f} images/s" if rate else ""
            elapsed = record["metrics"].get("elapsed_s")
            speed += f", {elapsed:.0f} s of training" if elapsed else ""
            typer.echo(f"{name}: finished {record['step']} steps{speed}; checkpoint: {record['checkpoint']}")
        else:
            failed += 1
            typer.echo(f"{name}: {record['status']}: {record['reason']}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def tune(
    family: str = typer.Option(..., "--family", "-f", help="The family whose hyperparameters to search."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Training seconds per trial, the "
                                                "whole budget (train.max_seconds; default 240)."),
    trials: int = typer.Option(8, "--trials", help="Configurations to try."),
    rungs: int = typer.Option(4, "--rungs", help="Budget marks: each trial is evaluated after 1/R, 2/R, ... of "
                              "its budget, and ASHA stops trials that are behind there."),
    space: Optional[List[str]] = typer.Option(None, "--space", help="KEY=SPEC to search (repeatable): "
                                              "lr=loguniform:1e-4:4e-3, beta1=uniform:0:0.9, n_critic=randint:1:5, "
                                              "n_critic=choice:1,2,5, batch_size=choice:32,64 (train.KEY too)."),
    default_space: bool = typer.Option(True, "--default-space/--no-default-space", help="Also search each "
                                       "learning rate (configured / 4 .. * 4), n_critic and the batch size; keys "
                                       "given with --set stay fixed."),
    metric: str = typer.Option("fid", "--metric", help="The evaluation metric to optimise, e.g. fid or "
                               "conditional_accuracy."),
    mode: Optional[str] = typer.Option(None, "--mode", help="min or max (default: known from the metric)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Trials at once (default: as many "
                                              "training jobs as the cluster holds)."),
    reduction_factor: int = typer.Option(2, "--reduction-factor", help="ASHA keeps the best 1/N of the trials "
                                         "at each of its decisions."),
    ray_address: Optional[str] = RayAddressOption,
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Search a family's hyperparameters on Ray Tune (ASHA early stopping); print the trials and the best
    configuration as a params.yaml block. Runs go under train.storage_path/tune-<family>-<hash>/."""
    from components import pipeline, tuning
    from components.data import load_prepared
    from components.registry.tracking import redact, tracking_uri

    _check_family_name(family)
    user_sets = list(sets or [])
    assignments = tuning.search_assignments(user_sets, max_seconds)
    assignments += [f"train.ray_address={ray_address}"] if ray_address else []
    params = _load(params_file, assignments)
    search_space = tuning.build_space(list(space or []), family, params, tuning.set_keys(user_sets), default_space)
    plan = tuning.make_plan(params, family, search_space, trials=trials, rungs=rungs, metric=metric, mode=mode,
                            concurrency=concurrency, reduction_factor=reduction_factor)
    pipeline.prepare_data(params)
    data_version = pipeline.current_data_version(params)
    typer.echo(f"searching {family}: {trials} trials of {plan.marks[-1]:g} s of training, evaluated at "
               f"{len(plan.marks)} marks; {plan.metric} ({plan.mode}); runs under {plan.directory}")
    outcome = tuning.run_search(params, plan, load_prepared(params.data.prepared_dir), data_version, typer.echo)
    typer.echo("\n" + tuning.render_report(outcome))
    typer.echo(f"MLflow: experiment {outcome.experiment}, parent run {outcome.parent_run_id} "
               f"(mlflow ui --backend-store-uri {redact(tracking_uri(params.registry))})")
    if outcome.best is None:
        raise typer.Exit(1)


def _check_run_name(name: str) -> None:
    """A run name becomes a folder under train.storage_path: one plain path component, never '..' or a path."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
        raise GanzooError(f"--run-name {name!r}: expected letters, digits, '_', '-' or '.' (one folder name, "
                          "no '/' or '..')")


@app.command()
def sample(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="A checkpoint directory or a run directory."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="A registered model, e.g. models:/mnist5k-dcgan@champion."),
    family: Optional[str] = typer.Option(None, "--family", "-f", help="The family's last trained checkpoint "
                                         "(<reports_dir>/FAMILY/training.json, written by `ganzoo train`)."),
    n: Optional[int] = typer.Option(None, "-n", help="Number of images (default 5000; 64 with --text), "
                                    "or of walks with --interpolate (default 8)."),
    out: Path = typer.Option(Path("samples.npz"), "--out", "-o",
                             help="Output: .npz (images, and labels if conditional) or .png (a grid)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="A caption for a text-conditional family, "
                                       "e.g. \"a thick seven leaning right\"."),
    interpolate: bool = typer.Option(False, "--interpolate", help="Rows that walk between two random latents "
                                     "(families with a z_dim)."),
    walk_steps: int = typer.Option(8, "--walk-steps", help="Images per walk with --interpolate."),
    spherical: bool = typer.Option(False, "--spherical", help="Walk z on the sphere instead of a straight line."),
    guide: str = typer.Option("reference", "--guide", help="Style-guided translation families (munit, "
                              "stargan_v2): `reference` takes each target domain's style from a held-out image "
                              "of it (shown before the output); `latent` samples style codes."),
    styles: int = typer.Option(3, "--styles", help="With --guide latent: translations per domain, each from a "
                               "fresh style code."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="With --interpolate on relgan: flip this "
                                            "attribute (default: change to the next row's attributes)."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Write generated images (N x C x H x W float32 in [-1, 1]) and their requested classes to an .npz or a PNG grid."""
    from components.training.sampling import sample_from_checkpoint, write_samples

    if sum(x is not None for x in (checkpoint, model, family)) != 1:
        raise GanzooError("sample: give exactly one of --checkpoint PATH, --model models:/NAME@ALIAS or "
                          "--family NAME")
    if model is not None:
        from components.registry.models import check_model_uri

        check_model_uri(model)  # before the params file or the store is read
    if out.suffix.lower() not in (".npz", ".png"):
        raise GanzooError(f"--out {out}: expected a .npz or .png file name")
    if n is not None and n <= 0:
        raise GanzooError(f"-n: expected a positive number of samples, got {n}")
    if family is not None:
        checkpoint = Path(_family_checkpoint(family, params_file, sets))
    if styles <= 0:
        raise GanzooError(f"--styles: expected a positive number of style codes, got {styles}")
    nrow = None
    if checkpoint is not None and _translates(checkpoint):
        if text is not None:
            raise GanzooError("--text: translation families translate held-out inputs; only text-conditional "
                              "families take a caption")
        images, labels, nrow = _sample_translation(checkpoint, n or 8, seed, out, params_file, sets, guide, styles,
                                                   walk_steps if interpolate else None, attribute)
    elif guide != "reference" or attribute is not None:
        raise GanzooError("--guide and --attribute apply to translation families (a --checkpoint or --family "
                          "of munit, stargan_v2, relgan, ...)")
    elif interpolate:
        if model is not None:
            raise GanzooError("--interpolate: needs --checkpoint or --family (it walks the family's latent)")
        from components.training.checkpoint import load_family
        from components.training.latent_walk import walk_images

        loaded, _ = load_family(checkpoint)
        images = walk_images(loaded, n or 8, walk_steps, seed, spherical, text).numpy()
        labels, nrow = None, walk_steps
    elif text is not None:
        images, labels = _sample_text(checkpoint, model, text, n or 64, seed, params_file, sets)
    elif model is not None:
        from components.registry.models import generate_from_registry

        _configure_registry(params_file, sets)
        images, labels = generate_from_registry(model, n or 5000, seed)
    else:
        images, labels = sample_from_checkpoint(checkpoint, n or 5000, seed)
    if out.suffix.lower() == ".png":
        import torch

        from components.data import save_image_grid

        save_image_grid(torch.from_numpy(images), out, nrow)
        shape = f"{images.shape[0] // nrow} rows of {nrow}" if nrow else str(images.shape[0])
        typer.echo(f"wrote a grid of {shape} images {list(images.shape[1:])} to {out}")
        return
    write_samples(out, images, labels)
    extra = f" and labels ({len(set(labels.tolist()))} classes)" if labels is not None else ""
    typer.echo(f"wrote {images.shape[0]} images {list(images.shape[1:])}{extra} to {out}")


def _translates(checkpoint: Path) -> bool:
    from components.families import get_family
    from components.families.base import TRANSLATION_TASKS
    from components.training.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir

    return get_family(read_checkpoint_meta(resolve_checkpoint_dir(checkpoint))["family"]).task in TRANSLATION_TASKS


def _sample_translation(checkpoint: Path, n: int, seed: int, out: Path, params_file: Path,
                        sets: Optional[List[str]], guide: str, styles: int, walk_steps: Optional[int],
                        attribute: Optional[str]):
    """Translations of the first n held-out rows of the prepared data: a grid of input | output | target
    rows (source | translations for domain families) for a .png, the outputs (and the rows' labels) for an
    .npz."""
    from components.data import load_prepared
    from components.evaluation.translation import translate_held_out
    from components.training.checkpoint import load_family

    params = _load(params_file, list(sets or []))
    loaded, _ = load_family(checkpoint)
    if guide != "reference" and not loaded.style_guided:
        raise GanzooError(f"--guide {guide}: family {loaded.name} has no style codes (munit and stargan_v2 do)")
    grid, outputs, labels, columns = translate_held_out(loaded, load_prepared(params.data.prepared_dir), n, seed,
                                                        guide, styles, walk_steps, attribute)
    if out.suffix.lower() == ".png":
        return grid, None, columns
    return outputs, labels, None


def _configure_registry(params_file: Path, sets: Optional[List[str]]) -> None:
    from components.registry.tracking import configure

    if params_file.is_file():
        configure(_load(params_file, list(sets or [])).registry)


def _family_checkpoint(family: str, params_file: Path, sets: Optional[List[str]]) -> str:
    """The checkpoint of the family's last finished training, as ``ganzoo evaluate`` finds it."""
    from components import pipeline
    from components.families import get_family
    from components.training.checkpoint import require_family, resolve_checkpoint_dir

    get_family(family)  # an unknown name fails here, naming the known ones
    params = _load(params_file, list(sets or []))
    checkpoint = pipeline.fetch_checkpoint(params, pipeline.read_training(params, family)["checkpoint"])
    require_family(resolve_checkpoint_dir(checkpoint), family)  # training.json may name another family's run
    return checkpoint


def _sample_text(checkpoint: Optional[Path], model: Optional[str], text: str, n: int, seed: int,
                 params_file: Path, sets: Optional[List[str]]):
    """(images, labels) of n images of one caption; labels are the class its class word names, if any."""
    import numpy as np
    import torch

    from components.data import captions

    if checkpoint is not None:
        from components.families import TaskKind
        from components.training.checkpoint import load_family

        loaded, _ = load_family(checkpoint)
        if loaded.task is not TaskKind.TEXT_CONDITIONAL:
            raise GanzooError(f"--text: family {loaded.name} is {loaded.task.value}; only text-conditional "
                              "families take a caption")
        loaded.nets.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = loaded.generate(n, [text] * n).float().clamp_(-1, 1).cpu()
    else:  # a registered text model takes [z ‖ the caption's token ids]
        from components.registry.models import load_registered_generator

        _configure_registry(params_file, sets)
        generator = load_registered_generator(model)
        tokens = captions.tokenize([text])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            inputs = torch.cat([torch.randn(n, generator.latent_dim), tokens.expand(n, -1).float()], dim=1)
            try:
                images = generator.module(inputs).float().clamp_(-1, 1)
            except Exception as exc:
                raise GanzooError(f"--text: {model} does not take a caption (its input is not "
                                  f"[z ‖ {captions.MAX_WORDS} token ids]: {type(exc).__name__})") from None
    named = int(captions.class_of_tokens(captions.tokenize([text]))[0])
    labels = np.full(n, named, dtype=np.int64) if named >= 0 else None
    return images.numpy(), labels


@app.command()
def init(path: Path = typer.Argument(Path("."), help="The project directory.")) -> None:
    """Make PATH a git + DVC repository (what `ganzoo run` needs to version the data)."""
    from components.data.versioning import init_project

    done = init_project(path)
    typer.echo("\n".join(done) if done else f"{path} is already a git + DVC repository")


FamiliesOption = typer.Option(None, "--family", "-f", help="Family to run (repeatable); default: params.yaml's.")


@app.command()
def run(
    family: Optional[List[str]] = FamiliesOption,
    ray_address: Optional[str] = RayAddressOption,
    force: bool = typer.Option(False, "--force", help="Retrain families whose champion already has this data "
                               "version and these params."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Run the retrain flow (Prefect): version data, train, evaluate, register, promote; print a summary."""
    import os

    sets = list(sets or []) + ([f"train.ray_address={ray_address}"] if ray_address else [])

    # the ephemeral Prefect API starts in a subprocess; slow or busy machines need more than its 20 s default
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from components.data.versioning import find_project_root

    _load(params_file, list(sets or []))  # refuse bad params, and a directory without DVC, before Prefect starts
    find_project_root(params_file.resolve().parent)
    from flows.retrain import retrain

    state = retrain(params_path=str(params_file), families=list(family or []) or None, overrides=sets, force=force,
                    return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, BaseException):  # the flow itself failed (bad data, DVC, ...), not one family
        raise rows
    _print_summary(rows)
    params = _load(params_file, list(sets or []))
    from components.registry.tracking import tracking_uri

    typer.echo(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri(params.registry)}")
    if any(row["status"] not in ("finished", "skipped") for row in rows):
        raise typer.Exit(1)


@app.command()
def serve(
    cron: str = typer.Option("0 3 * * 0", "--cron", help="When to retrain (cron, in UTC); default weekly."),
    family: Optional[List[str]] = FamiliesOption,
    name: str = typer.Option("retrain", "--name", help="Name of the deployment."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Serve the retrain flow on a cron schedule from this process (Prefect `flow.serve`; no work pool)."""
    from components.data.versioning import find_project_root

    _load(params_file, list(sets or []))
    find_project_root(params_file.resolve().parent)
    _check_cron(cron)
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain

    parameters = {"params_path": str(params_file.resolve()), "families": list(family or []) or None,
                  "overrides": list(sets or [])}
    retrain.serve(name=name, cron=cron, parameters=parameters, entrypoint_type=EntrypointType.MODULE_PATH)


def _check_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise GanzooError(f"--cron {cron!r}: not a valid cron expression (e.g. '0 3 * * 0', Sundays at 03:00)") \
            from None


AddressOption = typer.Option(..., "--address", help="The Ray Jobs API of the cluster, e.g. http://head:8265.")


@app.command()
def submit(
    address: str = AddressOption,
    family: Optional[List[str]] = FamiliesOption,
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Stream the job's logs until it ends."),
    install: bool = typer.Option(False, "--install", help="Install pyproject's pinned requirements into the job's "
                                 "environment (needs a package index on the cluster)."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Submit the retrain flow as a Ray Job on a cluster; prints the job id (and its logs with --follow)."""
    from components import jobs
    from components.data.versioning import find_project_root

    _load(params_file, list(sets or []))
    root = find_project_root(params_file.resolve().parent)
    job_id = jobs.submit_retrain(address, root, params_file, list(family or []), list(sets or []), install)
    typer.echo(f"submitted Ray job {job_id}")
    if not follow:
        return
    status = jobs.follow_logs(address, job_id, lambda text: typer.echo(text, nl=False))
    typer.echo(f"Ray job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


jobs_app = typer.Typer(no_args_is_help=True, help="Ray Jobs started by `ganzoo submit`.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("status")
def jobs_status(job_id: str, address: str = AddressOption) -> None:
    """Print the job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from components import jobs

    typer.echo(jobs.job_status(address, job_id))


@jobs_app.command("logs")
def jobs_logs(job_id: str, address: str = AddressOption,
              follow: bool = typer.Option(False, "--follow", help="Stream until the job ends.")) -> None:
    """Print the job's logs."""
    from components import jobs

    if follow:
        jobs.follow_logs(address, job_id, lambda text: typer.echo(text, nl=False))
    else:
        typer.echo(jobs.job_logs(address, job_id), nl=False)


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: str = AddressOption) -> None:
    """Stop the job."""
    from components import jobs

    stopped = jobs.stop_job(address, job_id)
    typer.echo(f"Ray job {job_id}: {'stop requested' if stopped else 'already ended'}")


def _print_summary(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="retrain summary")
    for column in ("family", "status", "steps", "FID", "KID", "precision", "recall", "version", "decision"):
        table.add_column(column, justify="right" if column not in ("family", "status", "decision") else "left")
    for row in rows:
        numbers = [_fmt(row.get(k), digits) for k, digits in (("fid", 2), ("kid", 4), ("precision", 3),
                                                                ("recall", 3))]
        status = row["status"] if not row.get("failed_stage") else f"{row['status']} ({row['failed_stage']})"
        decision = row.get("decision") or ""
        reason = row.get("reason") or ""
        table.add_row(row["family"], status, str(row.get("steps", "")), *numbers, str(row.get("version", "")),
                      f"{decision}: {reason}" if decision and reason else decision or reason)
    Console(width=160).print(table)


def _fmt(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@app.command()
def evaluate(
    family: List[str] = typer.Option(..., "--family", "-f", help="Family to evaluate (repeatable)."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Evaluate each family's last trained checkpoint; writes <reports_dir>/<family>/metrics.json."""
    from components import pipeline

    params = _load(params_file, list(sets or []))
    for name in family:
        report = pipeline.evaluate_stage(params, name)
        m = report["metrics"]
        typer.echo(f"{name}: FID {m['fid']:.3f} (floor {m['fid_floor']:.3f}), KID {m['kid']:.4f}, "
                   f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, classes {m['classes_covered']:.0f}; "
                   f"extractor {report['extractor']}")


@app.command()
def register(
    run_name: Optional[str] = typer.Option(None, "--run", help="A training run's name (training.json's "
                                           "run_name), e.g. one a flow trained but could not register."),
    family: Optional[str] = typer.Option(None, "--family", "-f", help="The family's last finished training."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Register a finished training's model (evaluating it first if needed) and apply the promotion gate.

    Registration is idempotent: a run registered before gets its existing version back."""
    from components import pipeline

    if (run_name is None) == (family is None):
        raise GanzooError("register: give exactly one of --run NAME or --family NAME")
    params = _load(params_file, list(sets or []))
    if family is not None:
        _check_family_name(family)
    name = family or pipeline.family_of_run(params, run_name)
    record = pipeline.register_run(params, name)
    typer.echo(f"{record['model']} version {record['version']}: {record['decision']}: {record['reason']}")


def _check_family_name(name: str) -> None:
    from components.families import get_family

    get_family(name)  # an unknown name fails here, naming the known ones


@app.command()
def promote(
    family: str = typer.Option(..., "--family", "-f", help="The family whose model to promote."),
    version: Optional[str] = typer.Option(None, "--version", help="Model version (default: the last registered)."),
    rollback: bool = typer.Option(False, "--rollback", help="Restore the previous champion instead."),
    params_file: Path = ParamsOption,
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Apply the promotion gate to a registered version, or roll the champion back."""
    from components import pipeline

    params = _load(params_file, list(sets or []))
    if rollback:
        record = pipeline.rollback_stage(params, family)
        typer.echo(f"{record['model']}: champion is version {record['version']} again")
        return
    record = pipeline.promote_stage(params, family, version)
    typer.echo(f"{record['model']} version {record['version']}: {record['decision']}: {record['reason']}")


def main() -> None:
    try:
        code = app(standalone_mode=False)  # without standalone mode, click returns typer.Exit's code
        if isinstance(code, int) and code:
            sys.exit(code)
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
