"""Benchmark tasks; importing this package registers every built-in benchmark's spec."""
from halluc.benchmarks.tasks import amber, chair, hallusionbench, mme, pope, repope  # noqa: F401  (register specs)
from halluc.benchmarks.tasks.base import Protocol, Sample, Task, check_images
from halluc.benchmarks.tasks.chair import ChairTask
from halluc.benchmarks.tasks.mme import MMETask
from halluc.benchmarks.tasks.pope import PopeTask

__all__ = ["ChairTask", "MMETask", "PopeTask", "Protocol", "Sample", "Task", "check_images"]
