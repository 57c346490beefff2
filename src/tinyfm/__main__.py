"""`python -m tinyfm` (what `torchrun -m tinyfm train ...` starts in every process)."""

from tinyfm.cli import main

main()
