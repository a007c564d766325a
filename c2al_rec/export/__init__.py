"""Export: strip the aux heads into a primary-only TorchScript serving model, behind a parity gate."""
