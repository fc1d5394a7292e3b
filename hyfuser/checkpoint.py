"""Writing checkpoint directories, and the one list of files a directory ships.

A directory that `save_hyfuser` (PyTorch) or `export_onnx.py` (ONNX Runtime) writes is loaded by `AutoModel`,
`AutoProcessor` and `pipeline(..., trust_remote_code=True)` from that directory alone, so it carries the remote-code
modules the loaders import. Those modules are the repository's root `.py` files other than the commands; every save
copies exactly the list below, and `pyproject.toml` installs exactly these as top-level modules.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import configuration_hyfuser
from pipeline_hyfuser import TASK, HyFusERPipeline

SHIPPED_FILES = (
    "configuration_hyfuser.py",
    "modeling_hyfuser.py",
    "processing_hyfuser.py",
    "audio_hyfuser.py",
    "backbones_hyfuser.py",
    "scaling_hyfuser.py",
    "pipeline_hyfuser.py",
    "timeline_hyfuser.py",
)
"""The remote code of a PyTorch checkpoint."""

FEATURE_CODE_FILES = ("processing_hyfuser.py", "audio_hyfuser.py", "backbones_hyfuser.py")
"""The shipped modules whose code decides the unscaled features the feature cache holds, part of its key. Not the
scaler's (the cache holds unscaled features) nor the configuration's (the processor's settings, hashed themselves,
are all the processor reads from it)."""

ONNX_SHIPPED_FILES = (*(name for name in SHIPPED_FILES if name != "modeling_hyfuser.py"), "onnx_hyfuser.py")
"""The remote code of an ONNX directory: the same, with the ONNX Runtime model in place of the PyTorch one."""

SOURCE_DIR = Path(configuration_hyfuser.__file__).resolve().parent
"""Where the shipped modules are: the repository root, or site-packages after `pip install`."""


def copy_shipped_files(output_dir: str | os.PathLike, names: tuple[str, ...]) -> None:
    """Copy the modules `names` into `output_dir`, replacing any copy `save_pretrained` traced there, so the directory
    never depends on which class happened to import which."""
    for name in names:
        shutil.copy2(SOURCE_DIR / name, Path(output_dir) / name)


def point_config_at(config, model_reference: str) -> None:
    """Set `config`'s `auto_map` to load `model_reference` ("module.Class") for the auto classes and its
    `custom_pipelines` to this pipeline, the remote-code entries a saved directory is served by."""
    config_module = type(config).__module__.rsplit(".", 1)[-1]
    # register_for_auto_class keeps one auto class per class: pre-fill the others so that the entries merge.
    config.auto_map = {
        "AutoConfig": f"{config_module}.{type(config).__name__}",
        "AutoModel": model_reference,
        "AutoModelForSequenceClassification": model_reference,
    }
    config.custom_pipelines = {
        TASK: {
            "impl": f"{HyFusERPipeline.__module__}.{HyFusERPipeline.__name__}",
            "pt": ["AutoModelForSequenceClassification"],
            "type": "multimodal",
        }
    }


def save_hyfuser(
    output_dir: str | os.PathLike,
    model,
    processor,
    save_backbones: bool | None = None,
) -> Path:
    """Write a directory that `AutoModel`, `AutoProcessor` and `pipeline(model=dir, trust_remote_code=True)` load
    from that directory alone: safetensors weights, `config.json` with `auto_map` and `custom_pipelines`, the
    processor files with the fitted scaler, the remote-code `.py` files and the frozen backbones.

    `save_backbones=None` copies the backbones into the directory when they were loaded from local paths (which
    will not exist on the machine that loads the checkpoint) and otherwise keeps their Hub ids, which the
    loader downloads; `True`/`False` force either.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if save_backbones is None:
        save_backbones = processor.has_local_backbones()

    model_class = type(model)
    config = model.config
    point_config_at(config, f"{model_class.__module__.rsplit('.', 1)[-1]}.{model_class.__name__}")
    type(config).register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForSequenceClassification")
    model.save_pretrained(output_dir, safe_serialization=True)

    processor.save_pretrained(output_dir, save_backbones=save_backbones)

    # save_pretrained copies only the files it can trace from the registered classes; copy every remote-code
    # file so the directory never depends on which class happened to import which.
    copy_shipped_files(output_dir, SHIPPED_FILES)
    return output_dir
