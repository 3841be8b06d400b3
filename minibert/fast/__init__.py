"""CPU fast paths: what this CPU can do (cpu.py, the one place tests override), oneDNN linear layers with
packed weights and the fused GELU (onednn.py), int8 layers (quantize.py), and the C heap handed back
between chunks of a long stream (heap.py)."""
