"""The MLflow UI as ``audiotrain ui`` serves it: MLflow's own server (``mlflow server --app-name audiotrain``), whose
page gives a browser that has not chosen yet the defaults a person training models wants.

MLflow 3.17's UI keeps its choices in the browser's localStorage (``<key>_v<version>``, JSON values). Left alone,
a new browser starts in the GenAI view (traces, "Detect Issues") and pops the assistant panel open on its first
load; the runs are behind a switch a newcomer does not know. The page served here sets, before the UI's own
script runs and only where the browser holds no value yet, the model-training view and "assistant already shown
once". A person who then picks GenAI, or opens the assistant, keeps that choice: nothing is overwritten.
Everything else — the API, the static files, the artifact proxy — is MLflow's server unchanged.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from flask import Response
from mlflow.server import app as flask_app

with warnings.catch_warnings():  # MLflow's own import, said twice at every start otherwise: nothing a user can do
    warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
    from mlflow.server.fastapi_app import app  # noqa: F401  the ASGI app uvicorn serves under this entry point

#: localStorage defaults (MLflow 3.17's keys): open experiments on their runs; do not pop the assistant open
DEFAULTS = {"mlflow.workflowType_v1": "machine_learning", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}
APP_NAME = "audiotrain"  # the mlflow.app entry point (pyproject.toml)


def defaults_script(defaults: dict = DEFAULTS) -> str:
    body = json.dumps({k: json.dumps(v) for k, v in defaults.items()})
    return ("<script>(function(d){try{for(var k in d){if(window.localStorage.getItem(k)===null)"
            f"{{window.localStorage.setItem(k,d[k]);}}}}}}catch(e){{}}}})({body});</script>")


def with_defaults(index_html: str) -> str:
    """MLflow's index.html with :func:`defaults_script` first in its head (before the UI's deferred script)."""
    head = index_html.find("<head>")
    if head < 0:
        return defaults_script() + index_html
    at = head + len("<head>")
    return index_html[:at] + defaults_script() + index_html[at:]


def serve_page():
    index = Path(flask_app.static_folder) / "index.html"
    if not index.is_file():  # a source install of MLflow without its built UI: MLflow's own explanation
        return _mlflow_serve()
    return Response(with_defaults(index.read_text(encoding="utf-8")), mimetype="text/html")


_mlflow_serve = flask_app.view_functions["serve"]
flask_app.view_functions["serve"] = serve_page
