"""sunpm pipeline."""
