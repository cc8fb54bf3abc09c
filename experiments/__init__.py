"""The paper's tables and figures, one module each (protocol: experiments/registry.py)."""
