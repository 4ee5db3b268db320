"""qnnfab: quantized neural networks onto small FPGAs, proven bit-exact before synthesis."""

__version__ = "0.1.0"
