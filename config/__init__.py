"""sunpm config."""
