"""deploy/k8s: every manifest parsed with its required fields per kind and cross-checked
against the images and scripts it names; the MPIJob's worker and launcher commands run for
real here (a real sshd on 127.0.0.1 started by mpi-worker.sh, mpi-launcher.sh waiting for
it over real ssh); the Spark submission rendered with its service account and pod template.
(No Kubernetes API server here: nothing is applied.)"""
from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.launch.submit import IMAGE_ROOT
from tests.conftest import REPO
from tests.unit.test_templates_docker import DOCKER, copies, instructions

K8S = REPO / "deploy/k8s"
MPIJOBS = [K8S / "mpijob-train.yaml", K8S / "mpijob-train-gpu.yaml"]
# The MPIJob spec fields of kubeflow.org/v2beta1 (mpi-operator's CRD): a misspelt one is
# dropped by the API server without a word.
MPIJOB_SPEC = {"slotsPerWorker", "runLauncherAsWorker", "runPolicy", "mpiReplicaSpecs", "sshAuthMountPath",
               "launcherCreationPolicy", "mpiImplementation"}
SSH_PORT = 2222


def docs(path: Path) -> list[dict]:
    found = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in found:
        assert d.get("apiVersion") and d.get("kind"), f"{path.name}: a document without apiVersion/kind"
    return found


def image_user(dockerfile: str) -> tuple[int, str]:
    """(uid, home) of the user a pipeline image runs as."""
    steps = instructions(DOCKER / dockerfile)
    uid = int(next(a.split("=", 1)[1] for w, a in steps if w == "ARG" and a.startswith("UID=")))
    name = re.search(r"useradd .*--create-home .*?(\w+)\s*$", next(a for w, a in steps if w == "RUN" and "useradd" in a)).group(1)
    return uid, f"/home/{name}"


def in_image(dockerfile: str, path: str) -> bool:
    return any(f"{IMAGE_ROOT}/{dest}{Path(s).name}" == path for _, sources, dest in copies(instructions(DOCKER / dockerfile))
               for s in sources)


@pytest.mark.parametrize("path", MPIJOBS, ids=lambda p: p.name)
def test_mpijob_workers_run_sshd_as_the_image_user_and_the_launcher_waits_for_them(path):
    (job,) = docs(path)
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= MPIJOB_SPEC, set(spec) - MPIJOB_SPEC
    dockerfile = "Dockerfile.cuda" if "gpu" in path.name else "Dockerfile"
    uid, home = image_user(dockerfile)
    assert spec["sshAuthMountPath"] == f"{home}/.ssh"  # where ssh and sshd look for the user's keys
    assert spec["launcherCreationPolicy"] == "WaitForWorkersReady"
    replicas = spec["mpiReplicaSpecs"]
    assert set(replicas) == {"Launcher", "Worker"} and replicas["Launcher"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    pods = {role: replicas[role]["template"]["spec"] for role in replicas}
    for role, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, role
        (container,) = pod["containers"]
        assert container["image"] and container["command"] and container["resources"]["limits"]["cpu"]
        assert in_image(dockerfile, container["command"][0]), f"{container['command'][0]} is not copied into {dockerfile}"
    worker, launcher = pods["Worker"]["containers"][0], pods["Launcher"]["containers"][0]
    assert worker["image"] == launcher["image"]
    assert worker["command"] == [f"{IMAGE_ROOT}/deploy/k8s/mpi-worker.sh"]
    assert worker["readinessProbe"]["tcpSocket"]["port"] == SSH_PORT and worker["ports"][0]["containerPort"] == SSH_PORT
    assert launcher["command"] == [f"{IMAGE_ROOT}/deploy/k8s/mpi-launcher.sh"]
    args = launcher["args"]
    assert args[0] == "horovodrun" and args[args.index("--hostfile") + 1] == "/etc/mpi/hostfile"
    assert int(args[args.index("-p") + 1]) == SSH_PORT and "--gloo" in args
    assert int(args[args.index("-np") + 1]) == replicas["Worker"]["replicas"] * spec["slotsPerWorker"]
    assert args[args.index("python") + 1] == f"{IMAGE_ROOT}/jobs/train.py"
    assert (REPO / args[args.index("--config") + 1].removeprefix(f"{IMAGE_ROOT}/")).is_file()
    mounts = {m["name"] for m in worker["volumeMounts"]}
    assert mounts <= {v["name"] for v in pods["Worker"]["volumes"]}


def test_spark_rbac_binds_the_drivers_service_account_to_what_it_needs():
    account, role, binding = docs(K8S / "spark-rbac.yaml")
    assert (account["apiVersion"], account["kind"]) == ("v1", "ServiceAccount")
    assert (role["apiVersion"], role["kind"]) == ("rbac.authorization.k8s.io/v1", "Role")
    assert (binding["apiVersion"], binding["kind"]) == ("rbac.authorization.k8s.io/v1", "RoleBinding")
    granted = {(r, v) for rule in role["rules"] if "" in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("get", "list", "watch", "create", "delete", "deletecollection"):
            assert (resource, verb) in granted, (resource, verb)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}


def test_spark_on_kubernetes_submission_uses_the_account_the_image_and_a_non_root_pod_template():
    proc = subprocess.run([str(K8S / "spark-submit-k8s.sh"), "--dry-run"], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHON": sys.executable, "K8S_MASTER": "k8s://https://api:6443",
                               "IMAGE": "reg/pipeline-spark:1", "NAMESPACE": "ml"})
    (account,) = [d for d in docs(K8S / "spark-rbac.yaml") if d["kind"] == "ServiceAccount"]
    steps = instructions(DOCKER / "Dockerfile.spark")
    for line in proc.stdout.splitlines():
        argv = shlex.split(line)
        conf = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
        assert argv[argv.index("--deploy-mode") + 1] == "cluster"
        assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == account["metadata"]["name"]
        assert conf["spark.kubernetes.container.image"] == "reg/pipeline-spark:1" and conf["spark.kubernetes.namespace"] == "ml"
        assert conf["spark.pyspark.python"] == f"{IMAGE_ROOT}/.venv/bin/python"
        for role in ("driver", "executor"):
            (template,) = docs(Path(conf[f"spark.kubernetes.{role}.podTemplateFile"]))
            assert template["kind"] == "Pod"
            context = template["spec"]["securityContext"]
            assert context["runAsNonRoot"] is True and str(context["runAsUser"]) == [a for w, a in steps if w == "USER"][-1]
            names = [c["name"] for c in template["spec"]["containers"]]
            assert conf[f"spark.kubernetes.{role}.podTemplateContainerName"] in names
        script = next(a for a in argv if a.startswith("local://"))
        assert (REPO / script.removeprefix(f"local://{IMAGE_ROOT}/")).is_file()
        assert ("jobs/", "jobs/") in {(s, d) for _, sources, d in copies(steps) for s in sources}  # the image has it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ssh_job(tmp_path):
    """What the operator gives the pods: a key pair, mounted 0644 for a non-root
    sshAuthMountPath (root-owned there, which ssh accepts for a private key; here, where the
    test's user owns it, the private key must be 0600), a hostfile naming the worker; plus
    an `ssh` that adds the key (in a pod ssh finds it at the user's ~/.ssh/id_rsa)."""
    auth = tmp_path / "ssh-auth"
    auth.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(auth / "id_rsa")], check=True)
    (auth / "authorized_keys").write_text((auth / "id_rsa.pub").read_text())
    for f in auth.iterdir():
        f.chmod(0o644)
    (auth / "id_rsa").chmod(0o600)
    port = _free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nexec /usr/bin/ssh -i {auth / 'id_rsa'} \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\n")
    env = {**os.environ, "HOME": str(tmp_path), "SSH_PORT": str(port), "SSH_AUTH_DIR": str(auth), "SSHD_DIR": str(tmp_path / "sshd"),
           "SSHD_LISTEN": "127.0.0.1", "MPI_HOSTFILE": str(hostfile), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, port, tmp_path


@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server (deploy/local/setup.sh installs it)")
def test_the_launcher_waits_for_the_worker_sshd_then_runs_its_command(ssh_job):
    env, port, tmp = ssh_job
    launcher = subprocess.Popen([str(K8S / "mpi-launcher.sh"), "sh", "-c", "echo launched: \"$@\"", "sh", "horovodrun", "-np", "1"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = None
    try:
        time.sleep(3)
        assert launcher.poll() is None, launcher.communicate()[0]  # no worker yet: still waiting
        worker = subprocess.Popen([str(K8S / "mpi-worker.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = launcher.communicate(timeout=60)[0]
        assert launcher.returncode == 0 and "worker 127.0.0.1 is reachable" in out and "launched: horovodrun -np 1" in out, out
        host_keys = sorted(p.name for p in (tmp / "sshd/etc/ssh").glob("ssh_host_*_key"))
        assert host_keys == ["ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]  # made at start
        ran = subprocess.run(["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "127.0.0.1", "echo", "hello from", "$(id -un)"],
                             env=env, capture_output=True, text=True, timeout=30)
        me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        assert ran.stdout.strip() == f"hello from {me}", ran.stderr
    finally:
        for proc in (launcher, worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def test_the_launcher_gives_up_naming_the_worker(ssh_job):
    env, port, _ = ssh_job
    proc = subprocess.run([str(K8S / "mpi-launcher.sh"), "true"], env={**env, "WORKERS_TIMEOUT_S": "2"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and f"worker 127.0.0.1 did not answer ssh on port {port} within 2s" in proc.stderr


def test_the_worker_refuses_to_start_without_the_operators_keys(tmp_path):
    proc = subprocess.run([str(K8S / "mpi-worker.sh")], env={**os.environ, "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == 1 and "spec.sshAuthMountPath" in proc.stderr
