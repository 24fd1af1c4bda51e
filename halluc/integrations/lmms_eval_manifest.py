"""lmms-eval's entry point (`[project.entry-points."lmms_eval.models"]`): `lmms-eval --model halluc`.

Only the manifest lives here, so that lmms-eval's registry, which loads every entry point while its
`lmms_eval.models` package initialises, imports nothing but its own `ModelManifest`; the model class
(`halluc.integrations.lmms_eval_model.Halluc`) is imported when `--model halluc` is asked for.
"""
from __future__ import annotations


def manifests():
    """The `halluc` chat model (lmms-eval calls this to read the manifests)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="halluc", chat_class_path="halluc.integrations.lmms_eval_model.Halluc")]
