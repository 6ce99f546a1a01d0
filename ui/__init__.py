"""Gradio layout of VICReg Studio, one module per tab (app.py at the repo root is the entry point)."""
