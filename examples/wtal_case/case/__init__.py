"""CASE (clustering-assisted F&B separation for weakly-supervised temporal action localisation), re-implemented on otlabel."""
