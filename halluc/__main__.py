"""`python -m halluc` = the `halluc` command (also what `accelerate launch -m halluc run ...` runs)."""
from halluc.cli import main

main()
