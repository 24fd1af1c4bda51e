"""Training-free methods: one file per method, registered by name.

Importing this package registers every method shipped with halluc.
"""
from halluc.interventions import (  # noqa: F401  (in-model methods)  # noqa: F401  (decoding methods)  # noqa: F401  (attention-editing methods)
                                           agla,
                                           apc,
                                           avisc,
                                           cca,
                                           damro,
                                           deco,
                                           dola,
                                           farsight,
                                           halc,
                                           icd,
                                           logit_shift,
                                           m3id,
                                           memvr,
                                           none,  # noqa: F401  (registers "none")
                                           only,
                                           opera,
                                           pai,
                                           ritual,
                                           sid,
                                           tame,
                                           vaf,
                                           var,
                                           vcd,
                                           vhr,
                                           vista,
                                           vti,
                                           yes_bias,
                                           yes_prompt,
)
from halluc.interventions.attach import attach, check_compatible
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookContext, HookSpec
from halluc.interventions.registry import (
                                           aliases,
                                           make_method,
                                           make_methods,
                                           method_class,
                                           method_names,
                                           register,
                                           register_alias,
)
from halluc.interventions.session import Request, Session

# RITUAL + VCD (RITUAL's v1 README) is plain stacking; the old name stays as an alias
register_alias("ritual-vcd", ("ritual", "vcd"))

__all__ = ["HookContext", "HookSpec", "Method", "Request", "Session", "aliases", "attach", "check_compatible",
           "make_method", "make_methods", "method_class", "method_names", "param", "register", "register_alias"]
