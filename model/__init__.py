"""qnnfab.model."""
