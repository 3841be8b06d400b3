"""Tools for looking inside a forward pass and checking a port: the step graph (steps.py), the trace of
every step (trace.py), golden activation dumps (dump.py) and their comparison (compare.py), parity with
transformers (parity.py), the attention explorer (explorer.py), and the numpy specification (spec.py)."""
