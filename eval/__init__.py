"""Fusion metrics (Tang's toolkit conventions), folder scoring, reports and the fuse manifest."""
