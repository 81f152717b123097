"""sunpm exporters/transports."""
