"""ltx-extend trainer: turns a job spec into a backward-extension LTX-2.3 LoRA.

Importing the package (and `spec`, `rules`, `billing`, `resource`) loads nothing
heavy, so the operator can use the contract without torch.
"""

__version__ = "0.1.0"
