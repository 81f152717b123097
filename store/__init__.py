"""sunpm store."""
