"""sunpm pipeline/drivers."""
