"""ltx-extend trainer: turns a job spec into a backward-extension LTX-2.3 or LTX-2.5 LoRA.

The contract it shares with the operator (spec, rules, results) is `ltx_contract`.
"""

__version__ = "0.1.0"
