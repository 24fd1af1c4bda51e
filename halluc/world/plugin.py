"""The toy world registers itself as a halluc plugin (entry point `halluc.plugins: world`).

It adds the offline model `toy-llava` (shipped weights), the dataset `world` (its POPE and CHAIR)
and the `halluc world` commands; nothing in halluc imports this package. Registering is light:
the model and the world are only built when used.
"""
from __future__ import annotations

TOY = "toy-llava"


def register() -> None:
    from halluc.benchmarks.build import register_dataset
    from halluc.cli.plugins import register_commands
    from halluc.engine.calibration_sets import CALIBRATION_SETS
    from halluc.modeling.registry import OfflineModel, register_model
    from halluc.world.cli import world_app

    register_model(OfflineModel(TOY, "llava", _load, note="trained on the toy world; hallucinates like real LVLMs "
                                "(`halluc run`)", revision=_revision, check=_check))
    register_dataset("world", _task)
    register_commands("world", world_app)
    CALIBRATION_SETS.register("world", _calibration)


def _load(seed: int):
    from halluc.world.model import load_toy_llava

    return load_toy_llava()


def _revision(seed: int) -> str:
    from halluc.version import __version__

    return f"halluc-{__version__}"  # the weights ship with the package


def _check() -> None:
    from halluc.world.model import check_shipped

    check_shipped()


def _calibration():
    from halluc.world.calibration import world_calibration

    return world_calibration()


def _task(benchmark, protocol, splits, max_new_tokens):
    from halluc.world.benchmark import world_task

    return world_task(benchmark, protocol, splits, max_new_tokens)
