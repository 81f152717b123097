"""sunpm sdcard."""
