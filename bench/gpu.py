"""The GPU path measured on a GPU, each figure against its baseline in the same run.

    python bench/gpu.py --digits DATASET_DIR [--image-rows 30000] [--epochs 2]
    python bench/gpu.py --smoke            # the same code on the CPU, tiny sizes, no results written

1. Precision: the real trainer (``Trainer``, ``dist.engine=single``, ``train.device=cuda``)
   on digits and on a synthetic 3x64x64 uint8 image set, fp32 vs bf16 vs fp16: samples/s,
   test accuracy, what the forward pass computed in, the time spent waiting for input.
   Goal: digits >= 0.97 in every precision.
2. Input stall: the same CNN trained for a fixed number of steps from the shard reader
   (uint8 batches in pinned memory, copied with non_blocking, standardised on the GPU;
   row groups decoded by one thread per core, the GPU trainer's default, and inline)
   vs from the same batches preloaded on the GPU (goal >= 0.95x); bf16 vs fp32 compute.
3. DDP over NCCL with the GPUs there are (one here: a world of one, the process group
   ``cpu:gloo,cuda:nccl`` the torch engine builds, DDP's reducer all-reducing over NCCL)
   vs the plain model; and the torch engine's own run of digits under torchrun.
4. Horovod, when it is built with NCCL (``hvd.nccl_built()``): digits on the GPU.

Needs no Spark: digits comes prepared (``--digits``, a dataset dir made by ``prepare``),
the image set is written here with pyarrow in the shard format. Writes
bench/results/gpu.json (figures, goals, the GPU's name, command, commit and time).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import goal, merge_section  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import ShardReader  # noqa: E402
from pipeline.engines import available_cores, make_collective  # noqa: E402
from pipeline.engines.device import autocast, describe_cuda, to_device  # noqa: E402
from pipeline.manifest import LATEST_NAME, write_manifest  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.schema import LABEL_COLUMN, shard_schema, tensor_feature  # noqa: E402
from pipeline.train.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_image_dataset(root: Path, name: str, rows: int, size: int = 64, channels: int = 3, classes: int = 10,
                        seed: int = 0, rows_per_shard: int = 2048, row_group_rows: int = 256) -> Path:
    """A dataset version in the shard format (manifest, uint8 fixed-size lists, page
    checksums): class templates (smooth random patterns) plus noise, split 90/5/5."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (classes, channels, 8, 8))
    templates = np.kron(coarse, np.ones((1, 1, size // 8, size // 8)))  # [classes, C, size, size]
    features = {"image": tensor_feature("uint8", [channels, size, size])}
    fingerprint = hashlib.sha256(json.dumps([name, rows, size, channels, classes, seed]).encode()).hexdigest()[:16]
    version = root / name / f"v-{fingerprint}"
    splits, start, sums, squares, seen = {}, 0, np.zeros(channels), np.zeros(channels), 0
    for split, share in (("train", 0.9), ("val", 0.05), ("test", 0.05)):
        n = int(rows * share)
        shards = []
        for first in range(0, n, rows_per_shard):
            count = min(rows_per_shard, n - first)
            labels = rng.integers(0, classes, count)
            images = np.clip(templates[labels] + rng.normal(0, 60, (count, channels, size, size)), 0, 255).astype(np.uint8)
            if split == "train":
                sums += images.mean(axis=(2, 3)).sum(0)
                squares += (images.astype(np.float64) ** 2).mean(axis=(2, 3)).sum(0)
                seen += count
            table = pa.Table.from_arrays(
                [pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1), pa.uint8()), channels * size * size),
                 pa.array(labels, pa.int32()), pa.array(np.arange(start, start + count), pa.int64())],
                schema=shard_schema(features))
            start += count
            path = version / split / f"part-{len(shards):05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, row_group_size=row_group_rows, compression="zstd", write_page_checksum=True)
            meta = pq.read_metadata(path)
            shards.append({"path": f"{split}/{path.name}", "rows": count, "bytes": path.stat().st_size,
                           "row_groups": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        splits[split] = {"rows": n, "shards": shards}
    mean = sums / seen
    std = np.sqrt(squares / seen - mean**2)
    write_manifest(str(version), {
        "format_version": 1, "name": name, "fingerprint": fingerprint, "input_rows": rows,
        "rejected": {"rows": 0, "by_reason": {}},
        "schema": {"features": features, "label": {"num_classes": classes, "classes": list(range(classes))}},
        "featurizer": {"image": {"type": "standardize", "axis": "channel", "mean": mean.tolist(), "std": std.tolist(),
                                 "applied_in": "model"}},
        "splits": splits,
    })
    (root / name / LATEST_NAME).write_text(version.name + "\n")
    return version


def train_once(config: str, overrides: list[str]) -> dict:
    """One run of the real trainer in this process; its report, with the mean fraction of
    epoch time spent waiting for input (from metrics.jsonl)."""
    cfg = load_config(REPO / config, overrides)
    collective = make_collective(cfg.dist, cfg.train.device)
    try:
        result = Trainer(cfg, collective).fit()
    finally:
        collective.shutdown()
    epochs = [json.loads(line) for line in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {**result.report, "input_wait_fraction": sum(e["input_wait_fraction"] for e in epochs) / len(epochs)}


def precision_section(args, device: str, digits_root: Path, images_root: Path, runs: Path) -> tuple[dict, list]:
    figures, goals = {}, []
    jobs = {
        "digits": ("conf/digits_cnn.yaml", [f"data.root={digits_root}"]),
        "images64": ("conf/synth_images_cnn.yaml", [f"data.root={images_root}", "data.name=images64", "model.channels=[64,128,256]",
                                                    f"train.epochs={args.epochs}", "train.batch_size=256", "train.reference_batch=256"]),
    }
    for dataset, (config, extra) in jobs.items():
        for precision in ("fp32", "bf16", "fp16"):
            report = train_once(config, [*extra, "dist.engine=single", f"train.device={device}", f"train.precision={precision}",
                                         f"run.root={runs}", f"run.name={dataset}-{precision}",
                                         *(["train.epochs=2"] if args.smoke else [])])
            figures[f"{dataset}_{precision}"] = {k: report[k] for k in (
                "train_samples_per_sec", "test_accuracy", "epochs", "compute_dtype", "device_name", "fp16_overflow_steps",
                "input_wait_fraction")}
            print(f"{dataset} {precision}: {report['train_samples_per_sec']:.0f} samples/s, test accuracy "
                  f"{report['test_accuracy']:.4f}, computed in {report['compute_dtype']}, waiting for input "
                  f"{report['input_wait_fraction']:.0%} of the time", flush=True)
        for precision in ("fp32", "bf16", "fp16"):
            if dataset == "digits":
                goals.append(goal(f"digits test accuracy, {precision} on the GPU", figures[f"digits_{precision}"]["test_accuracy"], 0.97))
        fp32 = figures[f"{dataset}_fp32"]["train_samples_per_sec"]
        for precision in ("bf16", "fp16"):
            figures[f"{dataset}_{precision}_vs_fp32"] = figures[f"{dataset}_{precision}"]["train_samples_per_sec"] / fp32
    return figures, goals


def stall_section(args, device: torch.device, images_root: Path) -> tuple[dict, list]:
    """Steps/s training from the reader (row groups decoded inline, and by the trainer's
    default of one thread per core the rank owns) vs from batches already on the GPU (same
    model); the preloaded side also compares fp32 and bf16 compute alone."""
    cfg = load_config(REPO / "conf/synth_images_cnn.yaml", ["model.channels=[64,128,256]"])
    version = images_root / "images64"
    threads = available_cores()
    readers = {"reader": ShardReader(str(version), "train", 0, 1, 256, shuffle_buffer=4096, pin_memory=device.type == "cuda",
                                     decode_threads=threads),
               "reader_inline": ShardReader(str(version), "train", 0, 1, 256, shuffle_buffer=4096,
                                            pin_memory=device.type == "cuda", decode_threads=0)}
    steps = min(args.stall_steps, len(readers["reader"]))
    resident = [to_device(b, device) for _, b in zip(range(steps), readers["reader"])]
    figures = {"decode_threads": threads, "reader_alone_batches_per_sec": {}}
    for label, reader in readers.items():  # no training: what the reader itself can hand over
        rates = []
        for _ in range(3):
            batches = iter(reader)
            _sync(device)
            t0 = time.perf_counter()
            for _, batch in zip(range(steps), batches):
                to_device(batch, device)
            _sync(device)
            rates.append(steps / (time.perf_counter() - t0))
        figures["reader_alone_batches_per_sec"][label] = sorted(rates)[1]
    print(f"reader alone: {figures['reader_alone_batches_per_sec']} batches/s of 256", flush=True)
    for precision in ("fp32", "bf16"):
        runs: dict[str, list] = {"preloaded_on_gpu": [], "reader": [], "reader_inline": []}
        sources = {"preloaded_on_gpu": lambda: iter(resident),
                   "reader": lambda: (to_device(b, device) for b in readers["reader"]),
                   "reader_inline": lambda: (to_device(b, device) for b in readers["reader_inline"])}
        for _ in range(3):  # alternate; keep each side's median
            for label, source in sources.items():
                torch.manual_seed(0)
                model = build_model(cfg.model, readers["reader"].manifest["schema"], readers["reader"].manifest["featurizer"]).to(device)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                _steps(model, optimizer, iter(resident), min(10, steps), precision, device)  # warm-up (kernels, allocator)
                seconds = _steps(model, optimizer, source(), steps, precision, device)
                runs[label].append(steps / seconds)
        result = {k: sorted(v)[1] for k, v in runs.items()}
        result["ratio"] = result["reader"] / result["preloaded_on_gpu"]
        result["ratio_inline"] = result["reader_inline"] / result["preloaded_on_gpu"]
        figures[precision] = {"steps": steps, "batch": 256, "steps_per_sec": result}
        print(f"stall {precision}: reader ({threads} decode threads) {result['reader']:.1f} steps/s, inline "
              f"{result['reader_inline']:.1f}, preloaded {result['preloaded_on_gpu']:.1f}: {result['ratio']:.3f} "
              f"({result['ratio_inline']:.3f} inline)", flush=True)
    figures["bf16_vs_fp32_preloaded"] = figures["bf16"]["steps_per_sec"]["preloaded_on_gpu"] / figures["fp32"]["steps_per_sec"]["preloaded_on_gpu"]
    return figures, [goal(f"training from the reader vs preloaded GPU tensors ({p}, 3x64x64 uint8)", figures[p]["steps_per_sec"]["ratio"], 0.95)
                     for p in ("fp32", "bf16")]


def _steps(model, optimizer, batches, steps: int, precision: str, device: torch.device) -> float:
    model.train()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        with autocast(precision, device):
            loss = F.cross_entropy(model(batch), batch[LABEL_COLUMN])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - started


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DDP_WORKER = r"""
import os, sys, time, torch, torch.distributed as dist, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from pipeline.engines.torch_backend import TorchCollective
coll = TorchCollective(timeout_s=60, device=sys.argv[2])
backend = str(dist.get_backend_config()) if dist.is_initialized() else None
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10)).to(coll.device)
ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[coll.device.index] if coll.device.type == "cuda" else None)
x, y = torch.randn(256, 3, 64, 64, device=coll.device), torch.randint(0, 10, (256,), device=coll.device)
out = {"backend": backend, "world_size": coll.size, "device": str(coll.device)}
for label, net in (("plain", model), ("ddp", ddp), ("plain2", model), ("ddp2", ddp)):
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for i in range(60):
        if i == 10:
            torch.cuda.synchronize() if coll.device.type == "cuda" else None
            t0 = time.perf_counter()
        opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
    torch.cuda.synchronize() if coll.device.type == "cuda" else None
    out[label] = 50 / (time.perf_counter() - t0)
# the engine's own collectives on this group: an object, a CPU sum (Gloo), a GPU buffer sum (NCCL)
out["broadcast_object"] = coll.broadcast_object({"ok": 1}, "probe")
out["allreduce_sum"] = coll.allreduce_sum(torch.ones(2, dtype=torch.float64), "probe").tolist()
if dist.is_initialized():
    t = torch.ones(4, device=coll.device); dist.all_reduce(t); out["nccl_allreduce"] = t.tolist()
coll.barrier(); coll.shutdown()
print("RESULT " + __import__("json").dumps(out))
"""


def ddp_section(device: str, digits_root: Path, runs: Path) -> tuple[dict, list]:
    gpus = torch.cuda.device_count() if device == "cuda" else 1
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "--master-addr", "127.0.0.1",
                "--master-port", "29561"]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DDP_WORKER)
    proc = subprocess.run([*torchrun, f.name, str(REPO), device], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"DDP probe failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    probe = json.loads(line[len("RESULT "):])
    probe["ddp_vs_plain"] = (probe["ddp"] + probe["ddp2"]) / (probe["plain"] + probe["plain2"])
    print(f"DDP ({probe['backend']}, {probe['world_size']} GPU): {probe['ddp_vs_plain']:.3f} of the plain model's steps/s", flush=True)
    # The torch engine's own path: jobs/train.py under torchrun, digits on the GPU.
    run = subprocess.run([*torchrun[:-1], "29562", str(REPO / "jobs/train.py"), "--config", str(REPO / "conf/digits_cnn.yaml"),
                          f"data.root={digits_root}", "dist.engine=torch", f"train.device={device}", "train.precision=bf16",
                          f"run.root={runs}", "run.name=torch-engine"], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"torchrun digits failed:\n{(run.stdout + run.stderr)[-3000:]}")
    report = json.loads((runs / "torch-engine" / "report.json").read_text())
    probe["torch_engine_digits"] = {k: report[k] for k in ("engine", "world_size", "device_name", "precision", "compute_dtype",
                                                           "test_accuracy", "train_samples_per_sec")}
    print(f"torch engine digits: {probe['torch_engine_digits']}", flush=True)
    goals = [goal("torch engine (DDP, NCCL) digits test accuracy on the GPU, bf16", report["test_accuracy"], 0.97)]
    return probe, goals


def horovod_section(device: str, digits_root: Path, runs: Path) -> tuple[dict, list]:
    try:
        import horovod.torch as hvd
    except ImportError:
        return {"built": False, "why": "horovod is not installed here"}, []
    if not hvd.nccl_built():
        return {"built": True, "nccl": False, "why": "Horovod was built without NCCL"}, []
    report = train_once("conf/digits_cnn.yaml", [f"data.root={digits_root}", "dist.engine=horovod", f"train.device={device}",
                                                 "train.precision=bf16", f"run.root={runs}", "run.name=horovod"])
    figures = {"built": True, "nccl": True, **{k: report[k] for k in ("engine", "world_size", "device_name", "precision", "test_accuracy",
                                                                      "train_samples_per_sec")}}
    print(f"horovod digits: {figures}", flush=True)
    return figures, [goal("Horovod (NCCL) digits test accuracy on the GPU, bf16", report["test_accuracy"], 0.97)]


def discovery() -> dict:
    """deploy/spark/gpu-discovery.sh against the real nvidia-smi."""
    proc = subprocess.run(["bash", str(REPO / "deploy/spark/gpu-discovery.sh")], capture_output=True, text=True)
    return {"returncode": proc.returncode, "output": json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", help="data root holding digits/ (prepared); default: data/")
    parser.add_argument("--image-rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stall-steps", type=int, default=80)
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU, tiny sizes; writes nothing")
    parser.add_argument("--only", nargs="*", default=["precision", "stall", "ddp", "horovod"])
    args = parser.parse_args(argv)
    if args.smoke:
        args.image_rows, args.stall_steps, args.epochs = min(args.image_rows, 1200), min(args.stall_steps, 4), 1
    elif not torch.cuda.is_available():
        print("bench/gpu.py measures the GPU path and needs a CUDA device (torch.cuda.is_available() is False); "
              "--smoke runs the same code on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    digits_root = Path(args.digits).resolve() if args.digits else REPO / "data"
    if {"precision", "stall"} & set(args.only):  # only they train on the image set
        started = time.time()
        write_image_dataset(work / "data", "images64", args.image_rows)
        print(f"wrote {args.image_rows} 3x64x64 images in {time.time() - started:.1f}s", flush=True)
    sections = {
        "precision": lambda: precision_section(args, device, digits_root, work / "data", work / "runs"),
        "stall": lambda: stall_section(args, torch.device(device), work / "data"),
        "ddp": lambda: ddp_section(device, digits_root, work / "runs"),
        "horovod": lambda: horovod_section(device, digits_root, work / "runs"),
    }
    failed = []
    for name in args.only:
        t0 = time.time()
        try:
            figures, goals = sections[name]()
        except Exception as err:  # noqa: BLE001 -- one section's failure is a result; the others still run
            figures, goals = {"error": f"{type(err).__name__}: {err}"[-3000:]}, []
            failed.append(name)
            print(f"{name}: FAILED {err}", flush=True)
        figures = {**figures, "seconds": round(time.time() - t0, 1), "cuda": describe_cuda()}
        if name == "precision" and not args.smoke:
            figures["discovery_script"] = discovery()
        print(json.dumps(goals, indent=1), flush=True)
        if not args.smoke:  # each section with its own command, commit and time; the others keep theirs
            merge_section("gpu", name, json.loads(json.dumps(figures, default=str)), goals)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
