"""Training-free methods: one file per method, registered by name.

Importing this package registers every method shipped with halluc.
"""
from halluc.interventions import none  # noqa: F401  (registers "none")
from halluc.interventions import cca, damro, vhr, vista  # noqa: F401  (in-model methods)
from halluc.interventions import agla, opera, ritual, vcd  # noqa: F401  (decoding methods)
from halluc.interventions import pai, var  # noqa: F401  (attention-editing methods)
from halluc.interventions.attach import attach, check_compatible
from halluc.interventions.base import HookSpec, Method, param
from halluc.interventions.registry import make_method, make_methods, method_class, method_names, register
from halluc.interventions.session import Session

__all__ = ["HookSpec", "Method", "Session", "attach", "check_compatible", "make_method", "make_methods",
           "method_class", "method_names", "param", "register"]
