"""Statistics over track predictions: bootstrap intervals (`bootstrap`) and paired tests of two
models on the same tracks (`paired`). Numpy and scipy only: importing them loads no torch."""
