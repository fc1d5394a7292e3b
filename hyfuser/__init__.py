"""HyFusER's training, evaluation and tooling code: everything that does not ship inside a checkpoint.

The root modules (`configuration_hyfuser.py`, `modeling_hyfuser.py`, ...) are the remote code a checkpoint carries;
the commands (`train.py`, `reproduce.py`, `export_onnx.py`, `app.py`) import this package.
"""
