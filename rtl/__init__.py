"""qnnfab.rtl."""
