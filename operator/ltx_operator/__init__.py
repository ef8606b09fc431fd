"""ltx-extend operator: LtxExtendTraining resources → prepare and train Jobs."""
