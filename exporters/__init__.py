"""sunpm exporters."""
