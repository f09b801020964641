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
