"""Reference protocols (`.ded` programs) and the Python functions they call (`functions.py`).

A package so that function targets such as ``"protocols.functions:sign"`` import from a checkout.
"""
