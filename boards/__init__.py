"""qnnfab.boards."""
