"""qnnfab.sim."""
