import json

import pytest

from pipeline.manifest import FORMAT_VERSION, ManifestError, read_manifest, resolve_version, write_manifest


def _manifest(**extra):
    m = {
        "format_version": FORMAT_VERSION, "name": "d", "fingerprint": "abc", "input_rows": 3,
        "rejected": {"rows": 0, "by_reason": {}}, "schema": {}, "featurizer": {}, "splits": {},
    }
    m.update(extra)
    return m


def test_write_then_read_via_latest(tmp_path):
    version = tmp_path / "d" / "v-abc"
    version.mkdir(parents=True)
    write_manifest(version, _manifest())
    (tmp_path / "d" / "LATEST").write_text("v-abc\n")
    got_dir, got = read_manifest(tmp_path / "d")
    assert got_dir == str(version) and got["input_rows"] == 3
    assert resolve_version(version / "manifest.json") == str(version)
    assert not list(version.glob(".*tmp*")), "atomic write leaves no temp file"


def test_version_without_manifest_does_not_exist(tmp_path):
    (tmp_path / "d" / "v-half").mkdir(parents=True)
    with pytest.raises(ManifestError, match="unfinished prepare"):
        read_manifest(tmp_path / "d" / "v-half")
    with pytest.raises(ManifestError, match="does not exist.*prepare"):
        read_manifest(tmp_path / "missing")


def test_other_format_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(format_version=99)))
    with pytest.raises(ManifestError, match="format_version 99"):
        read_manifest(tmp_path)


def test_missing_keys_are_named(tmp_path):
    m = _manifest()
    del m["splits"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="splits"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("entry", ["/etc/passwd", "../other/v-x/train/part-00000.parquet", "train/../../x.parquet",
                                   "s3://bucket/x.parquet", "train//x.parquet"])
def test_manifest_entries_may_not_leave_the_version(tmp_path, entry):
    m = _manifest()
    m["splits"] = {"train": {"rows": 1, "shards": [{"path": entry, "rows": 1, "row_groups": [1], "bytes": 1, "sha256": "x"}]}}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"lists '.*', which is not a relative path inside"):
        read_manifest(tmp_path)


def test_symlinks_out_of_the_version_and_a_latest_escaping_are_refused(tmp_path):
    version = tmp_path / "d" / "v-abc"
    (version / "train").mkdir(parents=True)
    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes(b"x")
    (version / "train" / "part-00000.parquet").symlink_to(outside)
    m = _manifest()
    m["splits"] = {"train": {"rows": 1, "shards": [{"path": "train/part-00000.parquet", "rows": 1, "row_groups": [1],
                                                    "bytes": 1, "sha256": "x"}]}}
    write_manifest(version, m)
    with pytest.raises(ManifestError, match=r"leads out of .* \(a symlink to .*elsewhere.parquet\)"):
        read_manifest(version)
    (tmp_path / "d" / "LATEST").write_text("../../etc\n")
    with pytest.raises(ManifestError, match=r"LATEST names '../../etc'"):
        read_manifest(tmp_path / "d")


def _version_listing(version, paths):
    m = _manifest()
    m["splits"] = {"train": {"rows": len(paths), "shards": [{"path": p, "rows": 1, "row_groups": [1], "bytes": 1,
                                                             "sha256": "x"} for p in paths]}}
    write_manifest(version, m)


def test_a_shard_directory_linked_out_of_the_version_is_refused_and_links_inside_are_fine(tmp_path):
    version = tmp_path / "d" / "v-abc"
    (version / "val").mkdir(parents=True)
    (version / "val" / "part-00000.parquet").write_bytes(b"x")
    (version / "val" / ".part-00001.parquet").symlink_to(version / "val" / "part-00000.parquet")  # inside
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (version / "train").symlink_to(elsewhere)
    _version_listing(version, ["val/part-00000.parquet", "val/.part-00001.parquet"])
    assert read_manifest(version)[1]["splits"]["train"]["rows"] == 2
    _version_listing(version, ["val/part-00000.parquet", "train/part-00000.parquet"])
    with pytest.raises(ManifestError, match=r"lists 'train/part-00000.parquet', which leads out of .*elsewhere"):
        read_manifest(version)


def test_many_shards_are_checked_with_one_listing_per_directory_not_a_realpath_each(tmp_path, monkeypatch):
    version = tmp_path / "v-abc"
    (version / "train").mkdir(parents=True)
    paths = [f"train/part-{i:05d}.parquet" for i in range(2000)]
    for p in paths:
        (version / p).touch()
    (version / "train" / "part-00007.parquet").unlink()
    (version / "train" / "part-00007.parquet").symlink_to(tmp_path / "out.parquet")
    _version_listing(version, paths)
    import pipeline.manifest as manifest_module

    calls = []
    real = manifest_module.os.path.realpath
    monkeypatch.setattr(manifest_module.os.path, "realpath", lambda p: calls.append(p) or real(p))
    with pytest.raises(ManifestError, match=r"'train/part-00007.parquet', which leads out"):
        read_manifest(version)
    assert len(calls) <= 4, calls  # the version, its train/ directory, and the one link
    (version / "train" / "part-00007.parquet").unlink()
    (version / "train" / "part-00007.parquet").touch()
    calls.clear()
    assert len(read_manifest(version)[1]["splits"]["train"]["shards"]) == 2000 and len(calls) <= 3
