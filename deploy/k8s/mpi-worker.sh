#!/usr/bin/env bash
# An MPIJob worker's command: sshd in the foreground as the container's own user (non-root
# in deploy/docker's images), so the launcher's horovodrun can start ranks here over ssh.
#
# The Kubeflow MPI Operator (v2beta1) mounts the job's ssh key pair at spec.sshAuthMountPath
# (id_rsa, id_rsa.pub, authorized_keys; readable by the user when that path is not
# /root/.ssh). A non-root sshd can only log in its own user and cannot write /etc/ssh, so
# the host keys are made here at start (ssh-keygen -A under a prefix) and the config,
# written beside them, follows the operator's non-root example: StrictModes no (the mounted
# keys are root-owned), no PAM, keys only.
#
# Environment: SSH_PORT (2222), SSH_AUTH_DIR ($HOME/.ssh, the sshAuthMountPath),
# SSHD_DIR ($HOME/.sshd: host keys, config, pid), SSHD_LISTEN (0.0.0.0).
set -euo pipefail
PORT="${SSH_PORT:-2222}"
AUTH_DIR="${SSH_AUTH_DIR:-$HOME/.ssh}"
STATE="${SSHD_DIR:-$HOME/.sshd}"
LISTEN="${SSHD_LISTEN:-0.0.0.0}"

[[ -r "$AUTH_DIR/authorized_keys" ]] \
    || { echo "error: no $AUTH_DIR/authorized_keys: set the MPIJob's spec.sshAuthMountPath to $AUTH_DIR (the operator mounts the job's key there)" >&2; exit 1; }
mkdir -p "$STATE/etc/ssh"
ssh-keygen -A -f "$STATE"  # rsa, ecdsa and ed25519 host keys under $STATE/etc/ssh
cat >"$STATE/sshd_config" <<CONF
Port $PORT
ListenAddress $LISTEN
HostKey $STATE/etc/ssh/ssh_host_ed25519_key
HostKey $STATE/etc/ssh/ssh_host_ecdsa_key
HostKey $STATE/etc/ssh/ssh_host_rsa_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $AUTH_DIR/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
CONF
[[ "$(id -u)" == 0 ]] && mkdir -p /run/sshd  # only a root sshd needs its privilege-separation directory
echo "worker $(hostname): sshd on port $PORT as $(id -un)"
exec /usr/sbin/sshd -De -f "$STATE/sshd_config"
