"""``horovodrun`` with its rendezvous server bound to one address.

    python -m pipeline.launch.bound_horovodrun ADDRESS [horovodrun arguments...]

Exactly horovodrun, except that the Gloo rendezvous it starts listens on ADDRESS (the
launcher's address on the ranks' network interface) instead of every interface.
"""
import sys

from pipeline.launch.network import bind_horovod_rendezvous


def main() -> None:
    address = sys.argv[1]
    sys.argv = ["horovodrun", *sys.argv[2:]]
    bind_horovod_rendezvous(address)
    from horovod.runner.launch import run_commandline

    run_commandline()


if __name__ == "__main__":
    main()
