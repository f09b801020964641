"""``python -m pipeline inspect``: a readable summary of a dataset version or a run."""
from __future__ import annotations

import json

from pipeline import storage
from pipeline.manifest import ManifestError, read_manifest


def describe(path: str) -> str:
    """Summary of a run directory (has report.json) or a dataset version / dataset dir;
    either may be a path or a URI."""
    if storage.is_file(storage.join(path, "report.json")):
        return describe_run(path)
    if not storage.exists(path):
        raise ManifestError(f"{path} does not exist")
    return describe_dataset(path)


def describe_dataset(path: str) -> str:
    version_dir, m = read_manifest(path)
    lines = [
        f"dataset {m['name']}  version {storage.basename(version_dir)}  (fingerprint {m['fingerprint']}, code {m.get('code_version', '?')})",
        f"  source: {_source_summary(m['source'])}",
        f"  input rows {m['input_rows']} = kept {sum(s['rows'] for s in m['splits'].values())} + rejected {m['rejected']['rows']}",
    ]
    for reason, n in m["rejected"]["by_reason"].items():
        lines.append(f"    rejected {n:>8}  {reason}")
    for name, spec in m["schema"]["features"].items():
        lines.append(f"  feature {name}: {_feature_summary(spec, m['featurizer'].get(name, {}))}")
    label = m["schema"]["label"]
    lines.append(f"  label: {label['num_classes']} classes {label['classes']}")
    for split, info in m["splits"].items():
        sizes = [s["rows"] for s in info["shards"]]
        groups = sum(len(s["row_groups"]) for s in info["shards"])
        mb = sum(s["bytes"] for s in info["shards"]) / 1e6
        spread = f", shard rows {min(sizes)}..{max(sizes)}" if sizes else ""
        lines.append(f"  {split:<5} {info['rows']:>9} rows in {len(sizes)} shard(s), {groups} row groups, {mb:.2f} MB{spread}")
    return "\n".join(lines)


def _source_summary(source: dict) -> str:
    if source["type"] == "synthetic":
        g = source.get("synthetic", {})
        return f"synthetic {g.get('kind')} generator: {g.get('rows')} rows, seed {g.get('seed')}"
    return f"{source['type']} {source['path']} ({source.get('files', '?')} file(s))"


def _numbers(values, limit: int = 6) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _feature_summary(spec: dict, fitted: dict) -> str:
    if spec["kind"] == "sequence":
        text = f"sequence {spec['dtype']} x {spec['dims']} dims, variable length"
    else:
        text = f"{spec['kind']} {spec['dtype']} {spec['shape']}"
    if fitted.get("type") == "standardize":
        text += f"; standardized per {fitted['axis']} (in {fitted['applied_in']}): mean {_numbers(fitted['mean'])} std {_numbers(fitted['std'])}"
    elif fitted.get("type") == "vocabulary":
        sizes = ", ".join(f"{c}: {len(v)}" for c, v in fitted["vocabularies"].items())
        text += f"; vocabularies (+1 out-of-vocabulary bucket) {sizes}"
    return text


def describe_run(path: str) -> str:
    report = json.loads(storage.read_text(storage.join(path, "report.json")))
    lines = [f"run {storage.basename(path)}"]
    lines += [f"  {k}: {v}" for k, v in report.items()]
    metrics = storage.join(path, "metrics.jsonl")
    if storage.is_file(metrics):
        records = [json.loads(line) for line in storage.read_text(metrics).splitlines() if line.strip()]
        for r in records:
            lines.append(
                f"  epoch {r['epoch']:>3}  loss {r['train_loss']:.4f}  acc {r['train_accuracy']:.4f}  "
                f"val_acc {r['val_accuracy']:.4f}  {r['samples_per_sec']:.0f} samples/s"
            )
    return "\n".join(lines)
