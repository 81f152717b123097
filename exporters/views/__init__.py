"""sunpm exporters/views."""
