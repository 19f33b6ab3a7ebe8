"""Plain-torch model maths: layers, encoders, heads, losses. No Lightning, no pandas."""
