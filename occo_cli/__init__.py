"""occo's command line: Typer commands over the occo library (no tensors, no math here)."""
