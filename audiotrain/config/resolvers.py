"""OmegaConf resolvers audiotrain configs use: ``${mul:2,${lora.r}}``, ``${cwd:}``, ``${run_dir:...}``, ``${sweep_id:}``,
``${exp_name_for:acestep,${data}}``."""
from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf


def register() -> None:
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: _prod(xs))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", lambda: os.getcwd())
    if not OmegaConf.has_resolver("sweep_id"):
        OmegaConf.register_new_resolver("sweep_id", _sweep_id, use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir, use_cache=True)
    if not OmegaConf.has_resolver("exp_name_for"):
        OmegaConf.register_new_resolver("exp_name_for", exp_name_for)


def exp_name_for(plugin: str, data=None) -> str:
    """The default experiment name: the plugin and the data folder's name (``acestep-mysongs``); a data file
    (``mysongs/train.txt``) is named by its folder, ``data=.`` by the working directory, no data by the plugin."""
    if not isinstance(data, str) or not data.strip():
        return str(plugin)
    path = Path(os.path.expanduser(data.strip()))
    path = path.absolute() if not path.exists() else path.resolve()
    name = (path.parent if path.is_file() else path).name
    name = re.sub(r"[^\w.-]+", "_", name).strip("._")[:60]
    return f"{plugin}-{name}" if name else str(plugin)


def _run_dir(log_dir: str, exp_name: str) -> str:
    """Hydra's job output directory when Hydra runs the job (one per sweep job), else a timestamped one."""
    from datetime import datetime

    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.output_dir)
    except (ValueError, ImportError):
        return f"{log_dir}/{exp_name}/{datetime.now():%Y-%m-%d_%H-%M-%S}"


def _sweep_id() -> str:
    """The sweep's name, set by the CLI from its overrides (``audiotrain.train.sweep_job.sweep_id``); outside
    the CLI (a bare Hydra app, the compose API) a timestamp."""
    from datetime import datetime

    return os.environ.get("AUDIOTRAIN_SWEEP_ID") or f"{datetime.now():%Y-%m-%d_%H-%M-%S}"


def _prod(xs):
    out = 1
    for x in xs:
        out = out * x
    return out
