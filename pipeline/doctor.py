"""``python -m pipeline doctor``: versions of every piece, and what is missing."""
from __future__ import annotations

import importlib
import platform
import re
import shutil
import subprocess

from pipeline.engines import available_cores


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except ImportError:
        return None


def java_version() -> str | None:
    """The ``java -version`` string, or None when java is not on PATH."""
    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
    match = re.search(r'version "([^"]+)"', out)
    return match.group(1) if match else out.strip().splitlines()[0]


def java_major(version: str) -> int:
    version = version.removeprefix("1.")
    return int(re.match(r"\d+", version).group())


def horovod_build() -> tuple[str | None, str]:
    """Horovod's version and what it was built with, e.g. ``PyTorch, Gloo``."""
    try:
        import horovod
        import horovod.torch as hvd
    except ImportError:
        return None, ""
    parts = ["PyTorch"]
    if hvd.gloo_built():
        parts.append("Gloo")
    if hvd.mpi_built():
        parts.append("MPI")
    if hvd.nccl_built():
        parts.append("NCCL")
    return horovod.__version__, ", ".join(parts)


def cuda_lines(horovod_built: str) -> list[str]:
    """CUDA as torch sees it: its CUDA version, the GPUs, NCCL, and whether Horovod can
    all-reduce GPU tensors (built with NCCL). Information, not problems: the CPU path is
    complete without any of it."""
    from pipeline.engines.device import describe_cuda

    info = describe_cuda()
    if not info["torch_cuda"]:
        return ["cuda       none (a CPU build of torch: train.device=auto trains on the CPU)"]
    if not info["available"]:
        return [f"cuda       torch built for CUDA {info['torch_cuda']}, no GPU visible (no driver, or CUDA_VISIBLE_DEVICES empty)"]
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(info["devices"]))
    lines = [f"cuda       {info['torch_cuda']}, {len(info['devices'])} GPU(s): {names}", f"nccl       {info.get('nccl') or 'MISSING'} (torch)"]
    if horovod_built and "NCCL" not in horovod_built:
        lines.append("           Horovod has no NCCL: dist.engine=horovod cannot train on these GPUs; run `make setup` "
                     "(with nvcc on PATH it builds Horovod with HOROVOD_GPU_OPERATIONS=NCCL) or use dist.engine=torch")
    return lines


def report() -> tuple[list[str], list[str]]:
    """Lines to print and the problems found."""
    problems = []
    lines = [f"python     {platform.python_version()} ({platform.machine()})", f"cores      {available_cores()}"]
    for module, why in (("torch", "models and training"), ("pyarrow", "shards"), ("pyspark", "prepare and score"), ("numpy", "reader")):
        version = _version(module)
        lines.append(f"{module:<10} {version or 'MISSING'}")
        if version is None:
            problems.append(f"{module} is missing ({why}): run `make setup`")
    hvd_version, built = horovod_build()
    lines.append(f"horovod    {hvd_version or 'MISSING'}" + (f" (built with {built})" if built else ""))
    if hvd_version is None:
        problems.append("Horovod with PyTorch is missing: run `make setup` (builds Horovod 0.28.1 with Gloo)")
    elif "Gloo" not in built:
        problems.append("Horovod was built without Gloo: remove its cached wheel (~/.cache/pipeline/wheels) and run `make setup`")
    lines.extend(cuda_lines(built))
    java = java_version()
    lines.append(f"java       {java or 'MISSING'}")
    if java is None:
        problems.append("java is not on PATH: Spark needs Java >= 17 (make setup installs openjdk-17 when run as root)")
    elif java_major(java) < 17:
        problems.append(f"java {java} is too old: Spark 4 needs Java >= 17")
    if java is not None and _version("pyspark") is not None:
        from pipeline.prep import cds

        archive = cds.archive_path()
        # Information, not a problem: without it Spark only starts ~1.5 s slower.
        lines.append(f"jvm cds    {archive if archive and archive.is_file() else 'none (make setup builds it; Spark starts ~1.5 s slower)'}")
    return lines, problems
