"""Fused and hand-scheduled implementations, apart from the reference maths they compute.

``recsys.nn`` states the model's maths (``layers``, ``encoder``, ``heads``, ``losses``) and
calls these where speed asks for a hand-written version; each kernel is tested against the
reference it replaces. One file per kernel:

- ``softmax_ce``: full-catalogue softmax CE with hand-written gradients, whole or in row
  chunks, fp32 or bf16 products, optionally as one component of a mixture
  (``losses.full_ce`` / ``chunked_ce``; reference ``losses.full_ce_reference``);
- ``dropout``: the "uniform" dropout sampler's masks (``layers.dropout``);
- ``attention``: attention written out step by step, for a dropout torch does not draw
  (``layers.attend``; reference ``F.scaled_dot_product_attention``);
- ``grouped``: the encoder over groups of rows of similar length (``train.length_groups``;
  reference ``SASRecEncoder.forward`` in one piece).

Kernels import torch, numpy and ``recsys.types`` only, never the modules that use them
(an import contract in setup.cfg keeps it so).
"""
