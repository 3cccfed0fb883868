"""CASE: clustering-assisted foreground/background separation for weakly-supervised temporal action localisation."""
