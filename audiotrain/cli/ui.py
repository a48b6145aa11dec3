"""``audiotrain ui``: serve the MLflow store on 127.0.0.1."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from audiotrain.tracking.mlflow_store import artifact_root_for, default_uri


def ui(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain ui", description="Open the MLflow UI for audiotrain runs.")
    ap.add_argument("--uri", default=None, help="tracking store (default: sqlite:///./mlflow.db)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    uri = args.uri or default_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        print(f"audiotrain ui: no runs yet at {uri}: train first (e.g. `make demo`) or pass --uri.", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    root = artifact_root_for(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    # the server (and the workers it starts) run in their own process group, which we stop when this process is
    # stopped: `kill <pid of audiotrain ui>` (SIGTERM) or Ctrl-C leaves no server behind
    server = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
