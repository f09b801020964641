"""``python -m pipeline <command>``: doctor, prepare, train, score, run, inspect, predict, export.

``prepare`` prints the published version directory on its last line; ``train`` and
``run`` print the run directory on theirs, so scripts can take ``| tail -1``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys

from pipeline.config import Config, ConfigError, load_config, with_absolute_locations
from pipeline.errors import is_user_error, lost_peer
from pipeline.train.records import COMMAND_ENV

log = logging.getLogger("pipeline")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, e.g. conf/digits_cnn.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file + overrides + defaults, locations made absolute) as YAML and exit")


def build_parser(print_only: bool = False) -> argparse.ArgumentParser:
    """The command line; ``print_only`` (``--print-config`` given) leaves out the options a
    command needs only to run, so the config prints without them."""
    needed = not print_only
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print versions of every piece and what is missing")
    p = sub.add_parser("prepare", help="Spark: raw data -> validated, sharded, published dataset version")
    _config_args(p)
    p = sub.add_parser("train", help="train on N Horovod ranks (or one process)")
    _config_args(p)
    p.add_argument("--np", type=int, default=1, help="number of ranks (default 1: train in this process)")
    p.add_argument("--launcher", choices=("local", "spark"), default="local")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--hosts", help="host:slots,... for Horovod ranks on other machines (horovodrun over ssh); "
                                   "the project and the config must be at the same path on each")
    p = sub.add_parser("score", help="Spark: apply a trained model to new raw data -> predictions Parquet + metrics")
    _config_args(p)
    p.add_argument("--model", required=needed, help="a run's model.pt")
    p.add_argument("--input", required=needed, help="raw data in the config's source format (file, directory or glob)")
    p.add_argument("--output", required=needed, help="new directory for predictions/, rejected/ and metrics.json")
    p = sub.add_parser("run", help="prepare -> train -> report")
    _config_args(p)
    p.add_argument("--np", type=int, default=2, help="number of training ranks (default 2)")
    p = sub.add_parser("inspect", help="summarise a dataset version or a run directory")
    p.add_argument("path")
    p = sub.add_parser("predict", help="no Spark: apply a trained model to raw data -> one predictions Parquet file")
    _model_args(p, needed)
    p.add_argument("--input", required=needed, help="raw data in the training data's format (file, directory or glob)")
    p.add_argument("--output", required=needed, help="new predictions file (.parquet); rejected rows go beside it "
                                                     "to <name>.rejected.parquet")
    p = sub.add_parser("export", help="write the model with its featurizer as one TorchScript or ONNX file, checked on real rows")
    _model_args(p, needed)
    p.add_argument("--format", required=needed, choices=("torchscript", "onnx"))
    p.add_argument("--output", required=needed, help="new model file (e.g. model.ts or model.onnx)")
    p.add_argument("--input", help="raw rows to check the export on (default: the run's test split)")
    return parser


def _model_args(p: argparse.ArgumentParser, needed: bool) -> None:
    """predict/export: a model bundle, and optionally the config that says how its input is
    read (the bundle records it; older bundles need the config)."""
    p.add_argument("--model", required=needed, help="a run's model.pt")
    p.add_argument("--config", help="read the input as this experiment YAML says (default: as the model bundle records)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the --config file")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved --config (or, without it, the model bundle's input settings) as YAML and exit")


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` letting ``key=value`` overrides stand anywhere on the line, also
    after options (argparse alone stops collecting a positional list at the first option)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [x for x in extra if x.startswith("-") or "=" not in x]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The user's command, for run.json (ranks started by this command inherit it).
    os.environ.setdefault(COMMAND_ENV, shlex.join([sys.executable, "-m", "pipeline", *argv]))
    args = parse_with_overrides(build_parser(print_only="--print-config" in argv), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # py4j logs at exit; under spark-submit that would land after the promised last line.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if getattr(args, "print_config", False):
        return with_one_line_errors(lambda: print_config(args))
    return with_one_line_errors(lambda: COMMANDS[args.command](args))


def print_config(args) -> int:
    """``--print-config``: the config the command would run with, as YAML; nothing runs."""
    from pipeline.config import to_yaml

    if args.command in ("predict", "export") and args.config is None:
        return print_bundle_reading(args)
    print(to_yaml(load(args)), end="")
    return 0


def with_one_line_errors(command) -> int:
    """Run ``command()``; an error whose message says what to fix (a bad config, input,
    location or checkpoint) becomes one ``error:`` line and exit status 2 (config) or 1,
    not a traceback. Anything else is a bug and keeps its traceback."""
    from pipeline.train.preemption import PREEMPTED_EXIT, Preempted

    try:
        return command()
    except Preempted as err:  # not a failure: the checkpoint is saved, the scheduler requeues
        print(err, file=sys.stderr)
        return PREEMPTED_EXIT
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- the user sees one clear line, not a traceback
        inside = _user_error_inside_spark(err)
        if inside is not None:
            print(f"error: {inside} (raised in a Spark task; the Spark log above has the rest)", file=sys.stderr)
            return 1
        if lost_peer(err):
            print(f"error: lost contact with another rank ({str(err).strip().splitlines()[0][:300]}); that rank's own "
                  "error, or its host's loss, is in the output above", file=sys.stderr)
            return 1
        if not is_user_error(err):
            raise
        if not getattr(err, "quiet", False):  # another rank prints the same line
            print(f"error: {err}", file=sys.stderr)
        return 1


# One of our errors, as a Python traceback inside a Spark job failure shows it.
_OURS_IN_SPARK = re.compile(r"\b(?:StorageError|SourceError|PrepareError|ScoreError|ShardError|CacheError|SchemaError): ([^\n]+)")


def _user_error_inside_spark(err: Exception) -> str | None:
    """The message of our own error that made a Spark task fail, if that is what ``err``
    (a py4j or pyspark exception wrapping the executor's traceback) is."""
    if not type(err).__module__.startswith(("py4j", "pyspark")):
        return None
    found = _OURS_IN_SPARK.findall(str(err))
    return found[-1].strip() if found else None


def cmd_doctor(args) -> int:
    from pipeline.doctor import report

    lines, problems = report()
    print("\n".join(lines))
    if problems:
        print("\nproblems:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print("\nall pieces present")
    return 0


def load(args) -> Config:
    """The command's config, with relative locations made absolute here, on the driver."""
    return with_absolute_locations(load_config(args.config, args.overrides))


def run_prepare(cfg: Config) -> str:
    """Prepare in a Spark session that is stopped afterwards; returns the version dir."""
    from pipeline.prep import prepare
    from pipeline.prep.session import get_session

    spark = get_session(f"prepare:{cfg.name}")
    try:
        result = prepare(cfg, spark)
    finally:
        spark.stop()
    m = result.manifest
    state = "published" if result.published else "unchanged, nothing published"
    print(
        f"prepare: {state}: {m['input_rows']} input rows, {m['rejected']['rows']} rejected, "
        + ", ".join(f"{s} {v['rows']}" for s, v in m["splits"].items())
    )
    return result.version_dir


def cmd_prepare(args) -> int:
    cfg = load(args)
    print(run_prepare(cfg))
    return 0


def run_train(cfg: Config, np: int, launcher: str = "local", resume: bool = False, hosts: str | None = None,
              source: tuple[str, list[str]] | None = None) -> dict:
    """Train on ``np`` ranks with the chosen launcher; returns rank 0's result. ``cfg``'s
    locations must already be absolute (:func:`load`).

    Horovod: ``horovod.run`` (or elastic ``horovodrun`` when ``dist.elastic``); with
    ``hosts``, ``horovodrun`` over ssh, ranks reading the experiment file ``source``
    (config path, overrides) from the same path on every host; torch: ``torchrun``;
    ``--np 1``: this process.
    """
    from pipeline.launch import runner

    if np < 1:
        raise ConfigError(f"--np must be >= 1, got {np}")
    if hosts is not None:
        if launcher != "local" or source is None:
            raise ConfigError("--hosts starts ranks with horovodrun over ssh; it does not combine with --launcher spark")
        return runner.run_on_hosts(cfg, np, hosts, resume, source)
    if launcher == "spark":
        if cfg.dist.engine not in ("horovod", "torch") or cfg.dist.elastic:
            raise ConfigError("--launcher spark runs Horovod ranks (horovod.spark.run) or DDP ranks (TorchDistributor): use "
                              "dist.engine=horovod or torch, with dist.elastic=false")
        from pipeline.launch.spark import run_on_spark, run_torch_on_spark
        from pipeline.prep.session import get_session

        spark = get_session(f"train:{cfg.name}")
        try:
            return (run_torch_on_spark if cfg.dist.engine == "torch" else run_on_spark)(cfg, np, resume)
        finally:
            spark.stop()
    if np == 1 and not cfg.dist.elastic:
        from pipeline.train.worker import train_rank

        return train_rank(cfg, resume=resume)
    from pipeline.train.preemption import launcher_notice

    with launcher_notice():  # ranks pre-empted -> exit status 75, as a rank's own
        return _run_local_ranks(cfg, np, resume)


def _run_local_ranks(cfg: Config, np: int, resume: bool) -> dict:
    from pipeline.launch import runner

    if cfg.dist.elastic:
        if cfg.dist.min_np > np:
            raise ConfigError(f"dist.min_np={cfg.dist.min_np} is more than --np {np}")
        return runner.run_local_subprocess(cfg, np, resume, "elastic")
    if cfg.dist.engine == "torch":
        return runner.run_local_subprocess(cfg, np, resume, "torchrun")
    if cfg.dist.engine != "horovod":
        raise ConfigError(f"--np {np} needs dist.engine=horovod or torch (got {cfg.dist.engine!r}); use --np 1 for engine single")
    from pipeline.launch.horovod import run_local

    return run_local(cfg, np, resume)


def cmd_train(args) -> int:
    cfg = load(args)
    result = run_train(cfg, args.np, args.launcher, resume=args.resume, hosts=args.hosts, source=(args.config, args.overrides))
    print(result["run_dir"])
    return 0


def cmd_run(args) -> int:
    import dataclasses

    from pipeline import storage

    cfg = load(args)
    version_dir = run_prepare(cfg)
    # Train on exactly the version just prepared, not on whatever LATEST names by now.
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, version=storage.basename(version_dir)))
    result = run_train(cfg, args.np)
    r = result["report"]
    print(
        f"\nsummary: {cfg.name}: {r['model']} trained by {r['world_size']} {r['engine']} rank(s) for {r['epochs']} epochs "
        f"on {version_dir}\n"
        f"  test accuracy {r['test_accuracy']:.4f} ({r['test_samples']} rows), val accuracy {r['val_accuracy']:.4f}, "
        f"{r['train_samples_per_sec']:.0f} train samples/s"
    )
    print(result["run_dir"])
    return 0


def cmd_score(args) -> int:
    from pipeline import storage
    from pipeline.prep.session import get_session
    from pipeline.score import score

    cfg = load(args)
    model, source, output = (storage.absolute(p) for p in (args.model, args.input, args.output))
    spark = get_session(f"score:{cfg.name}")
    try:
        result = score(cfg, spark, model, source, output)
    finally:
        spark.stop()
    m = result.metrics
    accuracy = f", accuracy {m['accuracy']:.4f} on {m['labeled_rows']} labeled rows" if "accuracy" in m else ""
    print(f"score: {m['scored_rows']} rows scored, {m['rejected_rows']} rejected{accuracy}")
    print(result.output)
    return 0


def cmd_inspect(args) -> int:
    from pipeline.inspect import describe

    from pipeline import storage

    print(describe(storage.absolute(args.path)))
    return 0


def _reading_config(args):
    """predict/export: the ``data`` section of ``--config`` (with its overrides), or None."""
    if args.config is None:
        if args.overrides:
            raise ConfigError(f"overrides {args.overrides} need --config: they change the config file's settings")
        return None
    return load(args).data


def print_bundle_reading(args) -> int:
    """``predict/export --print-config`` without ``--config``: the bundle's input settings."""
    import dataclasses

    from omegaconf import OmegaConf

    from pipeline.predict.bundle import read_bundle, reading_config

    if args.model is None:
        raise ConfigError("--print-config needs --config conf/X.yaml, or --model to show the model's input settings")
    if args.overrides:
        raise ConfigError(f"overrides {args.overrides} need --config: they change the config file's settings")
    from pipeline.train.run_dir import BUNDLE_DATA_SECTIONS

    data = reading_config(read_bundle(args.model), args.model)
    recorded = {k: v for k, v in dataclasses.asdict(data).items() if k in BUNDLE_DATA_SECTIONS}
    print(OmegaConf.to_yaml({"data": recorded}), end="")
    return 0


def cmd_predict(args) -> int:
    from pipeline.predict import predict

    result = predict(args.model, args.input, args.output, _reading_config(args))
    m = result.metrics
    accuracy = f", accuracy {m['accuracy']:.4f} on {m['labeled_rows']} labeled rows" if "accuracy" in m else ""
    rejected = f" (in {result.rejected})" if result.rejected else ""
    print(f"predict: {m['scored_rows']} rows predicted, {m['rejected_rows']} rejected{rejected}{accuracy}")
    print(result.output)
    return 0


def cmd_export(args) -> int:
    from pipeline.predict.export import TOLERANCE, export_model

    result = export_model(args.model, args.format, args.output, args.input, _reading_config(args))
    print(f"export: {result.format} model checked on {result.rows_checked} rows: largest probability difference "
          f"{result.max_difference:.2g} (tolerance {TOLERANCE:g}); inputs "
          + ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in result.inputs))
    print(result.output)
    return 0


COMMANDS = {"doctor": cmd_doctor, "prepare": cmd_prepare, "train": cmd_train, "score": cmd_score, "run": cmd_run, "inspect": cmd_inspect,
            "predict": cmd_predict, "export": cmd_export}

