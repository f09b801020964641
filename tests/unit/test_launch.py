import sys

from pipeline.launch.horovod import horovod_run_kwargs, horovodrun_argv, train_command


def test_horovodrun_argv_is_a_pure_function_of_its_inputs():
    command = train_command("conf/digits_cnn.yaml", ["train.epochs=1"], python="py")
    argv = horovodrun_argv(2, command, network_interface="lo")
    assert argv == [
        "horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "--network-interface", "lo",
        "py", "jobs/train.py", "--config", "conf/digits_cnn.yaml", "train.epochs=1",
    ]


def test_horovod_run_kwargs_default_to_local_slots():
    assert horovod_run_kwargs(3) == {"np": 3, "hosts": "localhost:3", "use_gloo": True, "executable": sys.executable}
    assert horovod_run_kwargs(2, hosts="a:1,b:1")["hosts"] == "a:1,b:1"


def test_explicit_hosts_and_launcher_path():
    argv = horovodrun_argv(4, ["x"], hosts="node1:2,node2:2", horovodrun="/venv/bin/horovodrun")
    assert argv == ["/venv/bin/horovodrun", "-np", "4", "-H", "node1:2,node2:2", "--gloo", "x"]


def test_torchrun_argv_is_a_pure_function_of_its_inputs():
    from pipeline.launch.torchrun import torchrun_argv

    assert torchrun_argv(2, ["jobs/train.py", "--config", "c.yaml"], master_port=29511, python="py") == [
        "py", "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--node-rank", "0",
        "--master-addr", "127.0.0.1", "--master-port", "29511", "jobs/train.py", "--config", "c.yaml",
    ]
    argv = torchrun_argv(4, ["x"], master_addr="node1", nnodes=2, node_rank=1, python="py")
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--master-addr") + 1] == "node1"
    # Across hosts: the same command on every node, meeting at the c10d rendezvous.
    assert torchrun_argv(1, ["x"], master_addr="n1", master_port=29400, nnodes=2, python="py", rdzv_id="job7") == [
        "py", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "n1:29400", "--rdzv-id", "job7", "x",
    ]


def test_elastic_horovodrun_argv_and_local_discovery(tmp_path):
    import subprocess

    from pipeline.launch.horovod import elastic_horovodrun_argv, local_discovery_hosts, write_discovery_script

    assert elastic_horovodrun_argv(1, 2, "/d.sh", ["py", "t.py"], network_interface="lo") == [
        "horovodrun", "-np", "2", "--min-np", "1", "--max-np", "2", "--host-discovery-script", "/d.sh", "--gloo",
        "--network-interface", "lo", "py", "t.py",
    ]
    # one slot per name for 2 ranks, so losing one "host" leaves the other
    assert local_discovery_hosts(2) == ["localhost:1", "127.0.0.1:1"]
    assert local_discovery_hosts(3) == ["localhost:2", "127.0.0.1:1"] and local_discovery_hosts(1) == ["localhost:1"]
    script = write_discovery_script(tmp_path / "d.sh", local_discovery_hosts(2))
    assert subprocess.run([str(script)], capture_output=True, text=True).stdout.split() == ["localhost:1", "127.0.0.1:1"]


def test_train_command_passes_resume():
    assert train_command("c.yaml", ["a=1"], python="py", resume=True) == ["py", "jobs/train.py", "--config", "c.yaml", "--resume", "a=1"]


def test_unparsable_horovod_knobs_are_dropped(monkeypatch):
    """horovodrun 0.28.1 exports '(None,)' for knobs it was not given; the core would read 0."""
    from pipeline.engines.horovod_backend import drop_unparsable_knobs

    monkeypatch.setenv("HOROVOD_CYCLE_TIME", "(None,)")
    monkeypatch.setenv("HOROVOD_CACHE_CAPACITY", "(None,)")
    monkeypatch.setenv("HOROVOD_FUSION_THRESHOLD", "0")
    assert drop_unparsable_knobs() == ["HOROVOD_CYCLE_TIME", "HOROVOD_CACHE_CAPACITY"]
    import os

    assert "HOROVOD_CYCLE_TIME" not in os.environ and os.environ["HOROVOD_FUSION_THRESHOLD"] == "0"


def test_the_spark_master_the_user_set_wins_and_local_only_when_none_is(tmp_path, monkeypatch):
    from pipeline.prep.session import configured_master

    for var in ("PYSPARK_GATEWAY_PORT", "PYSPARK_SUBMIT_ARGS", "MASTER", "SPARK_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))  # no spark-defaults.conf there yet
    assert configured_master() is None
    (tmp_path / "spark-defaults.conf").write_text("# cluster defaults\nspark.master   spark://10.0.0.1:7077\n")
    assert configured_master() == "spark://10.0.0.1:7077"
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master yarn --conf spark.x=1 pyspark-shell")
    assert configured_master() == "yarn"
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--conf spark.master=local[3] pyspark-shell")
    assert configured_master() == "local[3]"
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (tmp_path / "spark-defaults.conf").unlink()
    monkeypatch.setenv("MASTER", "k8s://https://api:6443")
    assert configured_master() == "k8s://https://api:6443"


def test_overrides_stand_anywhere_on_the_command_line():
    import pytest

    from pipeline.cli import build_parser, parse_with_overrides

    args = parse_with_overrides(build_parser(), ["run", "--config", "c.yaml", "a.b=1", "--np", "1", "c.d=2"])
    assert args.np == 1 and args.overrides == ["a.b=1", "c.d=2"]
    args = parse_with_overrides(build_parser(), ["train", "--np", "2", "--config", "c.yaml", "--resume", "x.y=3"])
    assert args.resume and args.overrides == ["x.y=3"]
    with pytest.raises(SystemExit):
        parse_with_overrides(build_parser(), ["train", "--config", "c.yaml", "--bogus"])


def test_cpu_quotas_of_cgroup_v1_and_v2_cap_the_thread_count(tmp_path):
    from pipeline.engines.base import cgroup_cpu_quota

    v2 = tmp_path / "v2"
    (v2 / "kubepods" / "pod1").mkdir(parents=True)
    (v2 / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cg2").write_text("0::/kubepods/pod1\n")
    assert cgroup_cpu_quota(str(v2), str(tmp_path / "cg2")) == 1.5
    (v2 / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(v2), str(tmp_path / "cg2")) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)  # the container's own cgroup mounted at the root: /proc names a path below that is absent
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cg1").write_text("4:memory:/x\n3:cpu,cpuacct:/yarn/container_01\n")
    assert cgroup_cpu_quota(str(tmp_path / "v1"), str(tmp_path / "cg1")) == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(str(tmp_path / "v1"), str(tmp_path / "cg1")) is None


def test_horovods_rendezvous_listens_on_the_chosen_address_only(monkeypatch):
    from horovod.runner.http import http_server

    from pipeline.launch.network import bind_horovod_rendezvous, interface_address, interface_towards

    monkeypatch.setattr(http_server, "find_port", http_server.find_port)  # restored afterwards
    assert interface_towards("127.0.0.1") == "lo" and interface_address("lo") == "127.0.0.1"
    from pipeline.launch.network import is_local_host

    assert is_local_host("localhost") and not is_local_host("no-such-host.invalid")
    bind_horovod_rendezvous("127.0.0.1")
    bind_horovod_rendezvous("127.0.0.1")  # idempotent: no wrapper around a wrapper
    server = http_server.RendezvousServer(False)
    port = server.start()
    try:
        assert server._httpd.server_address == ("127.0.0.1", port)  # not ("0.0.0.0", port)
    finally:
        server.stop()


def test_whether_horovod_has_gloo_is_asked_once_per_build_without_torch_in_the_launcher(tmp_path):
    import os
    import subprocess

    from tests.conftest import REPO

    env = {**os.environ, "PIPELINE_CACHE": str(tmp_path)}
    probe = "import sys; from pipeline.launch.horovod import gloo_built; print(gloo_built(), 'torch' in sys.modules)"
    first = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["True", "False"]  # asked in a child process: this one never imported torch
    [remembered] = (tmp_path / "horovod").glob("gloo-*")
    assert remembered.read_text() == "gloo\n"
    remembered.write_text("no gloo\n")  # the next launch reads the answer, asks nothing
    second = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert second.stdout.split() == ["False", "False"]
    (tmp_path / "not-a-directory").write_text("")  # a cache that cannot be written: asked, answered, not remembered
    env["PIPELINE_CACHE"] = str(tmp_path / "not-a-directory")
    third = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert third.stdout.split() == ["True", "False"]


def test_horovods_launcher_is_handed_the_answer_and_says_no_gloo_itself(monkeypatch):
    import pytest
    from horovod.runner import launch

    from pipeline.launch import horovod

    asked = launch.gloo_built
    monkeypatch.setattr(horovod, "gloo_built", lambda: False)
    with horovod.gloo_answered(), pytest.raises(ValueError, match="Gloo support has not been built"):
        launch.run_controller(True, lambda: None, False, None, False, None, 0)
    assert launch.gloo_built is asked
    started = []
    monkeypatch.setattr(horovod, "gloo_built", lambda: True)
    with horovod.gloo_answered():
        launch.run_controller(True, lambda: started.append(1), False, None, False, None, 0)
    assert started == [1]


def test_ranks_get_a_function_that_imports_the_trainer_in_the_rank():
    import subprocess

    import cloudpickle

    from pipeline.launch.horovod import rank_main
    from tests.conftest import REPO

    probe = ("import sys, cloudpickle; from pipeline.launch.spark import run_on_spark; "
             "from pipeline.launch.horovod import run_local, rank_main; "
             "assert len(cloudpickle.dumps(rank_main)) < 200; print('torch' in sys.modules)")
    launcher = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert launcher.stdout.split() == ["False"]
    assert cloudpickle.loads(cloudpickle.dumps(rank_main)) is rank_main  # by reference: the rank imports it
