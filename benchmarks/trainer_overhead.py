"""Trainer overhead and data-parallel scaling: images/s of the ganzoo trainer on Ray against a plain loop.

Overhead (``--section overhead``): for each family, (a) a plain single-process
PyTorch loop (2 threads) doing the family's own updates on the same networks,
batch and data, and (b) the ganzoo trainer with 1 Ray worker x 2 threads.
Target b/a >= 0.95.

Scaling (``--section scaling``): dcgan at batch 64 per worker, the ganzoo
trainer with 1 worker x 1 thread, 2 workers x 1 thread and 1 worker x 2
threads. Target (2 x 1) / (1 x 1) >= 1.8. Beside them, without Ray: one plain
loop at 1 thread, two independent plain loops at once (what two processes of
1 thread each can do on this machine at best), the ganzoo loop's DDP over
gloo in 2 processes, and the same with the gradient exchange left out, so that
the table shows which part costs what. A second table splits the DDP
iteration into the wait for the other process, the all-reduce transfer and the
rest, each all-reduce made synchronous and timed.

Placement (``--section placement``): the same plain dcgan loop in this process's
main thread, in another thread, in a Ray actor (main thread and another
thread) and as a Ray Train worker's function, beside the ganzoo trainer, to
tell Ray's share of the overhead from ganzoo's.

OpenMP (``--section openmp``): the plain dcgan loop in fresh processes, in the
main thread, in a new thread alone, and in a new thread beside another thread
that holds (or held) an OpenMP pool.

Allocator (``--section allocator``): the plain dcgan loop in this process's main
thread and as a Ray Train worker's training function with glibc's malloc
defaults and with ``keep_freed_memory`` (which the ganzoo worker calls), with
the minor page faults per step each incurs.

All-reduce (``--section allreduce``): what one gloo all-reduce costs between two
otherwise idle 1-thread processes on this machine, for one number and for
dcgan's D and G gradients, in fp32 and bf16: whether the scaling section's
exchange is bound by bytes (which compressing gradients would cut) or by the
round trips themselves.

    .venv/bin/python benchmarks/trainer_overhead.py [--section overhead|scaling|placement|openmp|allocator|allreduce|both]
        [--repeats 5]
        [--families dcgan,wgan_gp,cyclegan,stargan_v2] [--scale 1.0]

Each configuration runs once as a warm-up (in the overhead section, those of the
first family only), then ``--repeats`` times, interleaved
(a, b, a, b, ...) so that drift on a shared machine hits every configuration
alike; the tables give median (min-max). The ganzoo figure is rank 0's
steady-state rate over the second half of the run (worker start-up and the
first steps excluded); the plain loop likewise times only the steps after a
warm-up. Images/s counts real images drawn (n_critic batches included), summed
over workers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import record, repeat, show, spread, table  # noqa: E402

from components.config import load_params  # noqa: E402
from components.data import PreparedDataset, load_prepared, prepare_dataset  # noqa: E402
from components.families import build_family  # noqa: E402
from components.training.launcher import loop_settings, train_family  # noqa: E402
from components.training.loop import run_iteration, wrap_for_data_parallel  # noqa: E402
from components.training.sampler import ShardSampler  # noqa: E402


@dataclass(frozen=True)
class Workload:
    family: str
    source: str
    batch: int
    steps: int  # at --scale 1


WORKLOADS = {
    # steps give each run a timed second half of 10-20 s: shorter halves still overlap Ray's actors starting
    "dcgan": Workload("dcgan", "mnist5k", 64, 800),
    "wgan_gp": Workload("wgan_gp", "mnist5k", 64, 500),  # params.yaml: 2 critic batches per iteration
    "cyclegan": Workload("cyclegan", "digits2colored", 16, 120),
    "stargan_v2": Workload("stargan_v2", "digit_domains", 16, 60),
}


def params_for(work: Workload, root: str, workers: int, threads: int, steps: int, seed: int):
    return load_params("params.yaml", [
        f"data.source={work.source}", f"families=[{work.family}]", f"train.workers={workers}",
        f"train.cpus_per_worker={threads}", f"train.batch_size={work.batch}", f"train.steps={steps}",
        f"train.checkpoint_every={steps}", f"train.report_every={steps // 2}", f"train.sample_every={steps * 10}",
        f"train.storage_path={root}/runs", f"train.seed={seed}",
    ])


def plain_loop(work: Workload, prepared: PreparedDataset, params, steps: int, threads: int = 2) -> float:
    """The reference: the family's phases as bare zero_grad/backward/step, no Ray, no DDP, no reports.

    The networks, optimizers, hyperparameters and batches are the trainer's own, and
    the networks a phase does not update are frozen, as the trainer does.
    """
    torch.set_num_threads(threads)
    settings = loop_settings(params, work.family, prepared)
    torch.manual_seed(settings.seed)
    family = build_family(work.family, settings.spec, settings.overrides)
    optimizers, phases, nets = family.build_optimizers(), family.phases(), dict(family.nets.items())
    rows = slice(0, prepared.train_count)
    part = (lambda a: None if a is None else a[rows])
    sampler = ShardSampler(prepared.images[rows], part(prepared.labels), 0, 1, work.batch, settings.seed,
                           part(prepared.inputs), part(prepared.label_maps), part(prepared.domains),
                           part(prepared.attributes), part(prepared.attribute_mask))
    warmup = max(5, steps // 10)
    images, start = 0, time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            images, start = 0, time.perf_counter()
        batch = None
        for phase in phases:
            if step % phase.every:
                continue
            for _ in range(phase.repeats):
                if phase.uses_data or batch is None:
                    batch = sampler.next_batch()
                    images += len(batch)
                for name, net in nets.items():
                    net.requires_grad_(name in phase.modules)
                for name in phase.modules:
                    optimizers[name].zero_grad(set_to_none=True)
                loss, _ = phase.loss(batch, nets)
                loss.backward()
                for name in phase.modules:
                    optimizers[name].step()
                if phase.after_step is not None:
                    phase.after_step(nets)
    return images / (time.perf_counter() - start)


def ganzoo_trainer(work: Workload, prepared: PreparedDataset, root: str, workers: int, threads: int,
                   steps: int, seed: int) -> float:
    outcome = train_family(params_for(work, root, workers, threads, steps, seed), work.family, prepared,
                           show_progress=False)
    if not outcome.ok:
        raise SystemExit(f"ganzoo trainer failed on {work.family}: {outcome.reason}")
    return float(outcome.metrics["images_per_s"])


def interleaved(measures: dict[str, callable], runs: int, warmup: bool = True) -> dict[str, list[float]]:
    """One warm-up of each (unless ``warmup`` is False), then ``runs`` rounds of all of them in turn."""
    for measure in measures.values() if warmup else ():
        measure()
    results = {key: [] for key in measures}
    for _ in range(runs):
        for key, measure in measures.items():
            results[key].append(measure())
    return results


class Seeds:
    """A fresh seed per trainer run, so no run resumes another's checkpoint."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


def prepared_for(source: str, root: str, cache: dict) -> PreparedDataset:
    if source not in cache:
        prepare_dataset(source, f"{root}/prepared-{source}")
        cache[source] = load_prepared(f"{root}/prepared-{source}")
    return cache[source]


def overhead(families: list[str], runs: int, scale: float, root: str) -> dict:
    seeds, cache, rows, result = Seeds(), {}, [], {}
    for index, name in enumerate(families):
        work = WORKLOADS[name]
        prepared = prepared_for(work.source, root, cache)
        steps = max(10, int(work.steps * scale))
        params = params_for(work, root, 1, 2, steps, 0)
        got = interleaved({
            "plain": lambda: plain_loop(work, prepared, params, steps),
            "ganzoo": lambda: ganzoo_trainer(work, prepared, root, 1, 2, steps, seeds()),
        }, runs, warmup=index == 0)  # the first family's warm-up warms what all share (page cache, Ray, imports)
        ratio = statistics.median(got["ganzoo"]) / statistics.median(got["plain"])
        result[name] = {"batch": work.batch, "steps": steps, "data": work.source, "plain": spread(got["plain"]),
                        "ganzoo": spread(got["ganzoo"]), "ratio": ratio, "target": 0.95, "met": ratio >= 0.95}
        rows.append([name, work.source, work.batch, steps, show(got["plain"], 0), show(got["ganzoo"], 0),
                     f"{ratio:.2f}", "met" if ratio >= 0.95 else "missed"])
        print(f"  {name}: plain {show(got['plain'], 0)}, ganzoo {show(got['ganzoo'], 0)} images/s", flush=True)
    print(f"\nTrainer overhead, 2 threads, median (min-max) of {runs} after a warm-up, images/s")
    print(table(["family", "data", "batch", "steps", "(a) plain loop", "(b) ganzoo, 1 worker x 2 threads",
                 "b/a", "target >= 0.95"], rows))
    return result


def in_thread(measure: callable) -> float:
    """``measure()`` run in a new thread of this process, as Ray Train V2 runs a worker's training function."""
    out: dict[str, float] = {}
    thread = threading.Thread(target=lambda: out.setdefault("rate", measure()))
    thread.start()
    thread.join()
    return out["rate"]


def placement(runs: int, scale: float, root: str) -> dict:
    """Where the same plain dcgan loop (2 threads) runs: which part of the trainer overhead is Ray's, which ganzoo's."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from components.training.launcher import ensure_ray

    work, seeds = WORKLOADS["dcgan"], Seeds()
    prepared = prepared_for(work.source, root, {})
    steps = max(10, int(work.steps * scale))
    params = params_for(work, root, 1, 2, steps, 0)
    ensure_ray()

    @ray.remote(num_cpus=0)  # no CPUs reserved, so Ray Train's worker can take both while this actor idles
    class PlainLoopActor:
        def main_thread(self) -> float:
            return plain_loop(work, prepared, params, steps)

        def other_thread(self) -> float:
            return in_thread(lambda: plain_loop(work, prepared, params, steps))

    def ray_train_worker(config: dict) -> None:
        Path(config["out"]).write_text(str(plain_loop(work, prepared, params, steps)))

    def in_ray_train() -> float:
        out = Path(root) / f"rate-{seeds()}"
        TorchTrainer(ray_train_worker, train_loop_config={"out": str(out)},
                     scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
                     run_config=ray.train.RunConfig(name=out.name, storage_path=f"{root}/placement")).fit()
        return float(out.read_text())

    actor = PlainLoopActor.remote()
    got = interleaved({
        "driver_main": lambda: plain_loop(work, prepared, params, steps),
        "driver_thread": lambda: in_thread(lambda: plain_loop(work, prepared, params, steps)),
        "actor_main": lambda: ray.get(actor.main_thread.remote()),
        "actor_thread": lambda: ray.get(actor.other_thread.remote()),
        "ray_train": in_ray_train,
        "ganzoo": lambda: ganzoo_trainer(work, prepared, root, 1, 2, steps, seeds()),
    }, runs)
    ray.kill(actor)
    base = statistics.median(got["driver_main"])
    labels = {"driver_main": "plain loop, this process's main thread (the overhead table's (a))",
              "driver_thread": "plain loop, another thread of this process",
              "actor_main": "plain loop, a Ray actor's main thread",
              "actor_thread": "plain loop, another thread of a Ray actor",
              "ray_train": "plain loop as a Ray Train worker's training function (1 worker x 2 CPUs)",
              "ganzoo": "the ganzoo trainer, 1 worker x 2 threads (the overhead table's (b))"}
    print(f"\nWhere the loop runs, dcgan, batch {work.batch}, {steps} steps, 2 threads, "
          f"median (min-max) of {runs} after a warm-up")
    print(table(["where", "images/s", "÷ main thread"],
                [[labels[key], show(values, 0), f"{statistics.median(values) / base:.2f}"]
                 for key, values in got.items()]))
    return {"steps": steps, **{key: {**spread(values), "ratio": statistics.median(values) / base}
                               for key, values in got.items()}}


OPENMP_MODES = {
    "main": "this process's main thread, nothing before it",
    "thread": "a new thread; the main thread never ran torch",
    "main_then_thread": "a new thread, after the main thread ran a short loop (its OpenMP pool stays)",
    "thread_then_thread": "a new thread, after another thread ran a short loop and exited (its pool went with it)",
}


def openmp_probe(mode: str, steps: int, prepared_dir: str) -> float:
    """One fresh process of the OpenMP section: the plain dcgan loop placed as ``mode`` says."""
    work = WORKLOADS["dcgan"]
    prepared = load_prepared(prepared_dir)
    params = params_for(work, prepared_dir, 1, 2, steps, 0)
    short = lambda: plain_loop(work, prepared, params, 10)  # noqa: E731
    timed = lambda: plain_loop(work, prepared, params, steps)  # noqa: E731
    if mode == "main":
        return timed()
    if mode == "main_then_thread":
        short()
    elif mode == "thread_then_thread":
        in_thread(short)
    return in_thread(timed)


def openmp(runs: int, scale: float, root: str) -> dict:
    """Why a thread is slower than the main thread: the plain loop in fresh processes, placed four ways.

    libgomp keeps one thread pool per thread that has opened a parallel region, and once
    the pools together hold more threads than there are CPUs it spins only briefly before
    sleeping between regions, so every region pays a wake-up. A new thread alone is
    one pool; a new thread beside a main thread that ran torch is two.
    """
    work = WORKLOADS["dcgan"]
    prepared_for(work.source, root, {})
    steps = max(10, int(work.steps * scale))
    prepared_dir = f"{root}/prepared-{work.source}"

    def fresh(mode: str) -> float:
        out = subprocess.run([sys.executable, __file__, "--openmp-probe", mode, str(steps), prepared_dir],
                             capture_output=True, text=True, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1]))

    got = interleaved({mode: (lambda m=mode: fresh(m)) for mode in OPENMP_MODES}, runs)
    base = statistics.median(got["main"])
    print(f"\nThe plain dcgan loop in fresh processes, batch {work.batch}, {steps} steps, 2 threads, "
          f"median (min-max) of {runs} after a warm-up")
    print(table(["where", "images/s", "÷ main thread"],
                [[OPENMP_MODES[key], show(values, 0), f"{statistics.median(values) / base:.2f}"]
                 for key, values in got.items()]))
    return {"steps": steps, **{key: {**spread(values), "ratio": statistics.median(values) / base}
                               for key, values in got.items()}}


def with_page_faults(measure: callable, steps: int) -> tuple[float, float]:
    """(``measure()``, this process's minor page faults per step while it ran)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rate = measure()
    return rate, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def allocator(runs: int, scale: float, root: str) -> dict:
    """The plain loop in the main thread, and in a Ray Train worker's thread with and without ``keep_freed_memory``."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from components.training.allocator import keep_freed_memory
    from components.training.launcher import ensure_ray

    work, seeds = WORKLOADS["dcgan"], Seeds()
    prepared = prepared_for(work.source, root, {})
    steps = max(10, int(work.steps * scale))
    params = params_for(work, root, 1, 2, steps, 0)
    ensure_ray()

    def ray_train_worker(config: dict) -> None:
        if config["keep"] and not keep_freed_memory():
            raise RuntimeError("keep_freed_memory: this C library has no mallopt (not glibc)")
        measured = with_page_faults(lambda: plain_loop(work, prepared, params, steps), steps)
        Path(config["out"]).write_text(json.dumps(measured))

    def in_ray_train(keep: bool) -> tuple[float, float]:
        out = Path(root) / f"allocator-{seeds()}"
        TorchTrainer(ray_train_worker, train_loop_config={"out": str(out), "keep": keep},
                     scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
                     run_config=ray.train.RunConfig(name=out.name, storage_path=f"{root}/allocator")).fit()
        return tuple(json.loads(out.read_text()))

    got = interleaved({
        "main_thread": lambda: with_page_faults(lambda: plain_loop(work, prepared, params, steps), steps),
        "ray_train_default": lambda: in_ray_train(False),
        "ray_train_keep": lambda: in_ray_train(True),
    }, runs)
    rates = {key: [rate for rate, _ in values] for key, values in got.items()}
    faults = {key: [fault for _, fault in values] for key, values in got.items()}
    base = statistics.median(rates["main_thread"])
    labels = {"main_thread": "this process's main thread",
              "ray_train_default": "a Ray Train worker's training function, glibc's malloc defaults",
              "ray_train_keep": "a Ray Train worker's training function after keep_freed_memory() (as ganzoo's)"}
    print(f"\nThe plain dcgan loop and malloc, batch {work.batch}, {steps} steps, 2 threads, "
          f"median (min-max) of {runs} after a warm-up")
    print(table(["where", "images/s", "÷ main thread", "minor page faults per step"],
                [[labels[key], show(rates[key], 0), f"{statistics.median(rates[key]) / base:.2f}",
                  show(faults[key], 0)] for key in got]))
    return {"steps": steps, **{key: {**spread(rates[key]), "ratio": statistics.median(rates[key]) / base,
                                     "page_faults_per_step": spread(faults[key])} for key in got}}


def process_rank(mode: str, rank: int, world: int, port: int, steps: int, prepared_dir: str) -> dict:
    """One process of the no-Ray comparisons: ``independent`` (a plain loop alone), ``ddp`` (the ganzoo
    loop's DDP wrapping and iteration over gloo, as a Ray worker runs it, without Ray), ``ddp_local`` (the same
    with a comm hook that keeps each process's own gradients: DDP's bookkeeping without any exchange or wait) or
    ``ddp_timed`` (each gradient all-reduce run synchronously and timed in two parts: the wait for the other
    process, a barrier, and the transfer itself). Returns images/s, and the seconds of waiting and transferring."""
    import torch.distributed as dist

    from components.training.allocator import keep_freed_memory

    keep_freed_memory()  # as a ganzoo worker does: a fresh process's main arena, too, refaults each step's memory
    if mode == "allreduce":  # no data: the processes only exchange
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        return all_reduce_latencies(steps)
    work, prepared = WORKLOADS["dcgan"], load_prepared(prepared_dir)
    params = params_for(work, "/tmp", world, 1, steps, 0)
    if mode == "independent":
        return {"rate": plain_loop(work, prepared, params, steps, threads=1)}
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    settings = loop_settings(params, work.family, prepared)
    torch.manual_seed(settings.seed)
    family = build_family(work.family, settings.spec, settings.overrides)
    optimizers = family.build_optimizers()
    sampler = ShardSampler(prepared.images, prepared.labels, rank, world, work.batch, 0)
    nets, phases, device = wrap_for_data_parallel(family, torch.device("cpu"), world), family.phases(), torch.device("cpu")
    spent = {"wait_s": 0.0, "transfer_s": 0.0}
    hook = {"ddp_timed": _timed_all_reduce, "ddp_local": _local_gradients}.get(mode)
    for net in nets.values():
        if hook is not None and isinstance(net, torch.nn.parallel.DistributedDataParallel):
            net.register_comm_hook(spent, hook)
    warmup = max(5, steps // 10)
    for step in range(warmup + steps):
        if step == warmup:
            images, start = 0, time.perf_counter()
            spent.update(wait_s=0.0, transfer_s=0.0)
        _, drawn = run_iteration(step, phases, nets, optimizers, sampler, device)
        images = images + drawn if step >= warmup else 0
    elapsed = time.perf_counter() - start
    dist.destroy_process_group()
    return {"rate": images / elapsed, "iterations": steps, "elapsed_s": elapsed, **spent}


ALL_REDUCE_SIZES = {"one number": 1, "dcgan D's gradients": 36_577, "dcgan G's gradients": 347_073}


def all_reduce_latencies(calls: int) -> dict[str, float]:
    """Milliseconds per gloo all-reduce, by tensor size and dtype, each the mean of ``calls`` after 20 untimed."""
    import torch.distributed as dist

    got = {}
    for dtype in (torch.float32, torch.bfloat16):
        for label, numel in ALL_REDUCE_SIZES.items():
            tensor = torch.ones(numel, dtype=dtype)
            for _ in range(20):
                dist.all_reduce(tensor)
            dist.barrier()
            began = time.perf_counter()
            for _ in range(calls):
                dist.all_reduce(tensor)
            got[f"{label}, {str(dtype).removeprefix('torch.')}"] = 1000 * (time.perf_counter() - began) / calls
    dist.destroy_process_group()
    return got


def allreduce(runs: int) -> dict:
    measured = [processes("allreduce", 2, 200, "")[0] for _ in range(runs)]
    per_case = {case: [one[case] for one in measured] for case in measured[0]}
    print(f"\nOne gloo all-reduce between 2 idle 1-thread processes, ms, mean of 200 calls; median (min-max) "
          f"of {runs} pairs of processes")
    print(table(["tensor", "elements", "ms per all-reduce"],
                [[case, ALL_REDUCE_SIZES[case.rsplit(",", 1)[0]], show(values, 2)] for case, values in per_case.items()]))
    return {"calls": 200, "ms_per_all_reduce": {case: spread(values) for case, values in per_case.items()}}


def _timed_all_reduce(spent: dict, bucket):  # no return annotation: DDP checks it, and a string one fails
    """A DDP comm hook: the gradient average, synchronously, with the wait and the transfer timed apart."""
    import torch.distributed as dist

    buffer = bucket.buffer()
    began = time.perf_counter()
    dist.barrier()
    arrived = time.perf_counter()
    dist.all_reduce(buffer)
    spent["wait_s"] += arrived - began
    spent["transfer_s"] += time.perf_counter() - arrived
    done = torch.futures.Future()
    done.set_result(buffer.div_(dist.get_world_size()))
    return done


def _local_gradients(spent: dict, bucket):
    """A DDP comm hook that exchanges nothing: each process keeps the gradients of its own batch."""
    done = torch.futures.Future()
    done.set_result(bucket.buffer())
    return done


def processes(mode: str, world: int, steps: int, prepared_dir: str) -> list[dict]:
    """What each of ``world`` processes of ``mode``, run at once, returned."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, __file__, "--rank-process", mode, str(rank), str(world), str(port),
                                  str(steps), prepared_dir], stdout=subprocess.PIPE, text=True, env=env)
                for rank in range(world)]
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"a {mode} process failed ({child.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def summed_rate(mode: str, world: int, steps: int, prepared_dir: str) -> float:
    """Images/s of ``world`` processes of ``mode`` run at once, summed."""
    return sum(result["rate"] for result in processes(mode, world, steps, prepared_dir))


def iteration_split(results: list[dict]) -> dict[str, float]:
    """Milliseconds per iteration, averaged over the processes: waiting, transferring, and the rest."""
    def per_iteration(key: str) -> float:
        return 1000 * statistics.mean(r[key] / r["iterations"] for r in results)

    total, wait, transfer = per_iteration("elapsed_s"), per_iteration("wait_s"), per_iteration("transfer_s")
    return {"iteration_ms": total, "wait_ms": wait, "transfer_ms": transfer, "rest_ms": total - wait - transfer}


def scaling(runs: int, scale: float, root: str) -> dict:
    work, seeds = WORKLOADS["dcgan"], Seeds()
    prepared = prepared_for(work.source, root, {})
    steps = max(10, int(work.steps * scale))  # the same steps per worker in every configuration
    prepared_dir = f"{root}/prepared-{work.source}"
    got = interleaved({
        "1x1": lambda: ganzoo_trainer(work, prepared, root, 1, 1, steps, seeds()),
        "2x1": lambda: ganzoo_trainer(work, prepared, root, 2, 1, steps, seeds()),
        "1x2": lambda: ganzoo_trainer(work, prepared, root, 1, 2, steps, seeds()),
        "plain_1": lambda: summed_rate("independent", 1, steps, prepared_dir),
        "plain_2": lambda: summed_rate("independent", 2, steps, prepared_dir),
        "ddp_2": lambda: summed_rate("ddp", 2, steps, prepared_dir),
        "ddp_2_local": lambda: summed_rate("ddp_local", 2, steps, prepared_dir),
    }, runs)
    splits = [iteration_split(processes("ddp_timed", 2, steps, prepared_dir)) for _ in range(runs)]
    base = statistics.median(got["1x1"])
    ratios = {key: statistics.median(values) / base for key, values in got.items()}
    print(f"\nData-parallel scaling, dcgan, batch {work.batch} per worker, {steps} steps, "
          f"median (min-max) of {runs} after a warm-up")
    print(table(["configuration", "images/s", "÷ 1 worker x 1 thread"], [
        ["1 worker x 1 thread", show(got["1x1"], 0), "1.00"],
        ["2 workers x 1 thread", show(got["2x1"], 0), f"{ratios['2x1']:.2f} (target >= 1.8)"],
        ["1 worker x 2 threads", show(got["1x2"], 0), f"{ratios['1x2']:.2f}"],
        ["without Ray: 1 plain loop x 1 thread", show(got["plain_1"], 0), f"{ratios['plain_1']:.2f}"],
        ["without Ray: 2 independent plain loops x 1 thread, summed (the machine's ceiling)",
         show(got["plain_2"], 0), f"{ratios['plain_2']:.2f}"],
        ["without Ray: the ganzoo loop, DDP over gloo, 2 processes x 1 thread", show(got["ddp_2"], 0),
         f"{ratios['ddp_2']:.2f}"],
        ["without Ray: the same, gradients not exchanged (DDP's bookkeeping, no all-reduce)",
         show(got["ddp_2_local"], 0), f"{ratios['ddp_2_local']:.2f}"],
    ]))
    split = {key: [one[key] for one in splits] for key in splits[0]}
    print(f"\nThe DDP row's iteration, each all-reduce made synchronous and timed: ms per iteration, median "
          f"(min-max) of {runs}")
    print(table(["part", "ms per iteration"], [
        ["whole iteration", show(split["iteration_ms"], 1)],
        ["waiting for the other process (a barrier before each all-reduce)", show(split["wait_ms"], 1)],
        ["all-reduce transfer", show(split["transfer_ms"], 1)],
        ["the rest: forward, backward, optimizer steps, DDP's bookkeeping", show(split["rest_ms"], 1)],
    ]))
    return {"batch_per_worker": work.batch, "steps": steps, **{key: spread(v) for key, v in got.items()},
            "ddp_timed_ms_per_iteration": {key: spread(values) for key, values in split.items()},
            "ratio_2x1": ratios["2x1"], "ratio_1x2": ratios["1x2"], "target": 1.8, "met": ratios["2x1"] >= 1.8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("overhead", "scaling", "placement", "openmp", "allocator", "allreduce", "both"), default="both",
                        help="both: overhead and scaling; placement: the plain loop in and out of Ray")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--families", default=",".join(WORKLOADS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's step count")
    parser.add_argument("--rank-process", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--openmp-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.openmp_probe:
        mode, steps, prepared_dir = args.openmp_probe
        print(json.dumps(openmp_probe(mode, int(steps), prepared_dir)))
        return
    if args.rank_process:
        mode, rank, world, port, steps, prepared_dir = args.rank_process
        print(json.dumps(process_rank(mode, int(rank), int(world), int(port), int(steps), prepared_dir)))
        return
    unknown = set(args.families.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"--families: no workload for {', '.join(sorted(unknown))}; known: {', '.join(WORKLOADS)}")
    with tempfile.TemporaryDirectory() as root:
        if args.section in ("overhead", "both"):
            record("trainer_overhead", {"repeats": args.repeats,
                                        "families": overhead(args.families.split(","), args.repeats, args.scale, root)})
        if args.section in ("scaling", "both"):
            record("scaling", {"repeats": args.repeats, **scaling(args.repeats, args.scale, root)})
        if args.section == "placement":
            record("placement", {"repeats": args.repeats, **placement(args.repeats, args.scale, root)})
        if args.section == "openmp":
            record("openmp_pools", {"repeats": args.repeats, **openmp(args.repeats, args.scale, root)})
        if args.section == "allocator":
            record("allocator", {"repeats": args.repeats, **allocator(args.repeats, args.scale, root)})
        if args.section == "allreduce":
            record("all_reduce", {"repeats": args.repeats, **allreduce(args.repeats)})


if __name__ == "__main__":
    main()
