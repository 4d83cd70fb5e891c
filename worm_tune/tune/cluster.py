"""Connecting a driver to Ray: a private local instance, or a cluster checked before joining.

``ray.init()`` with no address joins whatever cluster Ray's address file names, even one whose
processes died long ago, and then waits forever. Without ``--address`` a sweep therefore always
starts its own instance (``address="local"``). With one, the cluster is probed first in a child
process that is killed after a few seconds, so a wrong address, a dead cluster or a missing
authentication token is one line within seconds instead of minutes of Ray's retry warnings.

Ray 2.59+ turns token authentication on for ``ray start`` clusters once a token exists (it keeps
one in ``~/.ray/auth_token``), but only auto-detected clusters pick the token up by themselves.
When ``RAY_AUTH_MODE`` is unset and the probe is refused for want of a token, the driver uses the
one Ray can find (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or that file) and probes again.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap

import ray
from ray._private.services import canonicalize_bootstrap_address
from ray._raylet import AuthenticationTokenLoader, Config

PROBE_TIMEOUT_S = 10.0

#: Run in a child process: connect to the GCS and report what happened on the last line.
_PROBE = textwrap.dedent(
    """
    import sys
    from ray._raylet import GcsClient
    try:
        GcsClient(address=sys.argv[1]).internal_kv_get(b"worm_tune_probe", None, timeout=5)
    except Exception as exc:
        outcome = "auth" if type(exc).__name__ == "AuthenticationError" else "error"
        print(outcome, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
    else:
        print("ok")
    """
)


class ClusterError(ValueError):
    """The Ray cluster cannot be used; the message is one line naming the address."""


def check(address: str | None) -> str | None:
    """What :func:`connect` will join: None (a new local instance) or a cluster address that was
    found listening and accepting this machine's credentials. Raises :class:`ClusterError`."""
    if address is None:
        return None
    target = _resolve(address)
    if target.startswith("ray://"):
        return target
    _check_listening(address, target)
    if _probe(address, target) == "auth" and "RAY_AUTH_MODE" not in os.environ:
        # The cluster wants a token: use the one Ray keeps here, if any. (Only then: a driver in
        # token mode cannot start actors on a cluster without authentication.)
        if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
            raise ClusterError(
                f"the Ray cluster at {address!r} requires token authentication and no token was found here; set "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token (`ray get-auth-token` on its head node)"
            )
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray caches its config: make this process see the new mode
        if _probe(address, target) == "auth":
            raise ClusterError(
                f"the Ray cluster at {address!r} refused this machine's authentication token; set RAY_AUTH_TOKEN "
                "to the cluster's token (`ray get-auth-token` on its head node)"
            )
    return target


def connect(address: str | None, target: str | None, verbose: bool = False) -> None:
    """Start a private local Ray instance (``target`` None) or join ``target`` (from :func:`check`).

    Unless ``verbose``, the trials' own output stays in Ray's log files: the trials print nothing
    worth reading, and Ray's workers, stopped at the end of a sweep, may print tracebacks of their
    own shutdown. A trial's error reaches the terminal through Tune, which reports it from the driver.
    """
    if ray.is_initialized():
        return
    # Ray logs that it turned token authentication on for a new instance: not the user's business.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    try:
        ray.init(address=target or "local", include_dashboard=False, configure_logging=False, log_to_driver=verbose)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(exc)}") from None


def _resolve(address: str) -> str:
    """``host:port`` (or a ``ray://`` client address) from ``--address`` (``auto`` reads Ray's address file)."""
    if address.startswith("ray://"):
        return address
    try:
        target = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise ClusterError(f"cannot use --address {address!r}: {_first_line(exc)}") from None
    if target is None:
        raise ClusterError(f"--address {address!r} names no cluster; leave it out to start a local Ray instance")
    return target


def _check_listening(address: str, target: str) -> None:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        at = "" if target == address else f" ({target})"
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address!r}{at}: nothing answers there ({reason}); "
            "is the cluster up (`ray status` on its head node)?"
        ) from None


def _probe(address: str, target: str) -> str:
    """Connect to the GCS from a child process killed after a few seconds: "ok", or "auth" when
    the cluster refused this process's credentials; anything else is a :class:`ClusterError`."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, target],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=os.environ.copy(),
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address!r}: {target} accepts connections but no Ray GCS "
            f"answered within {PROBE_TIMEOUT_S:.0f} s; is it the head node's GCS port (6379 by default)?"
        ) from None
    lines = proc.stdout.strip().splitlines()
    verdict = lines[-1] if lines else f"error the probe failed: {_tail(proc.stderr)}"
    outcome, _, reason = verdict.partition(" ")
    if outcome in ("ok", "auth"):
        return outcome
    raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {reason}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"
