"""MaskGIT's pure functions: masking schedules and iterative parallel decoding."""
