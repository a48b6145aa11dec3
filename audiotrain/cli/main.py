"""``audiotrain``: train (Hydra overrides), plus subcommands ``ui``, ``export``, ``merge``, ``compare``, ``generate`` and plugin ones.

Heavy libraries are imported only by the command that needs them, so ``audiotrain --help`` is fast.
"""
from __future__ import annotations

import os
import sys

USAGE = """audiotrain — fine-tune audio generation models (LoRA, Hydra, Lightning, MLflow)

  audiotrain model=acestep data=DIR lora.r=16            train one run (any config key can be overridden)
  audiotrain -m model=acestep data=DIR lora.r=8,16       a sweep (one job per combination; the same command
                                                         again skips finished jobs, resumes stopped ones)
  audiotrain model=acestep data=DIR hparams_search=lora_optuna   an Optuna search
  audiotrain --cfg job model=acestep data=DIR            print the composed config and exit
  audiotrain ui [--port 5000]                            MLflow UI on 127.0.0.1 for ./mlflow.db
  audiotrain export SOURCE [KEY=VALUE] [--out DIR]      a run's adapter, or one trained elsewhere (a PEFT folder,
                                                         pytorch_lora_weights.safetensors, lora.sft), in PEFT +
                                                         the model's own format
  audiotrain merge SOURCE [KEY=VALUE] --out DIR          merge the adapter into the base weights
  audiotrain compare SWEEP_DIR|EXPERIMENT               table + PNG of runs (curves, metric per swept axis)
  audiotrain generate SOURCE [--seed N] [--lora-scale X] [--prompts FILE] [--out DIR]   audio from a run, an
                                                         adapter or merged weights (SOURCE --help: its inputs)
{plugin_cmds}
Config groups: model, lora (default|none), precision (32|bf16-mixed|16-mixed), optimizer (adamw|adamw8bit),
scheduler (constant|warmup_linear|cosine|multistep|cosine_restarts), backend (local|ddp|deepspeed), tracking (mlflow|none),
debug (smoke|overfit), launcher (parallel|slurm|ray), hparams_search (lora_optuna). See README.md for the ACE-Step flag → override table.
Weights and checkpoints are read as data; trust_pickle=true (--trust-pickle for export/merge) unpickles them fully,
which runs any code a file carries: DANGEROUS, only for files you made yourself. README.md, "Safety".
"""


def _plugin_commands() -> dict:
    from audiotrain.plugins import registry

    cmds = {}
    for plugin in registry.discover().values():
        cmds.update(plugin.commands())
    return cmds


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if argv and argv[0] in ("-h", "--help", "help"):
        extra = "".join(f"  audiotrain {name} ...\n" for name in sorted(_plugin_commands()))
        print(USAGE.format(plugin_cmds=extra))
        return 0
    if argv and argv[0] == "ui":
        from audiotrain.cli.ui import ui

        return ui(argv[1:])
    if argv and argv[0] == "compare":
        from audiotrain.cli.compare import compare

        return compare(argv[1:])
    if argv and argv[0] == "generate":
        from audiotrain.cli.generate import generate

        return generate(argv[1:])
    if argv and argv[0] in ("export", "merge"):
        from audiotrain.cli import adapters

        return getattr(adapters, argv[0])(argv[1:])
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        cmds = _plugin_commands()
        if argv[0] in cmds:
            return int(cmds[argv[0]](argv[1:]) or 0)
        print(f"audiotrain: unknown command '{argv[0]}'; run `audiotrain --help`.", file=sys.stderr)
        return 2
    from audiotrain.cli.train_entry import run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
